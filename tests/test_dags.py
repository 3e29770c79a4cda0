"""DAG integrity: the files import without errors, are wired as documented, and retry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[1] / "dags"


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    import os

    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_dags_import_cleanly(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"crm_ingest", "crm_quarterly_reports"}


def test_ingest_dag_shape(dagbag):
    dag = dagbag.dags["crm_ingest"]
    assert {"crm", "ingest"} <= set(dag.tags)
    assert dag.get_task("validate").upstream_task_ids == {
        "extract_sales",
        "extract_service",
        "extract_finance",
    }
    assert dag.get_task("resolve_customers").upstream_task_ids == {"validate"}
    for task in dag.tasks:
        assert task.retries >= 1 and task.execution_timeout is not None
        assert task.outlets, f"{task.task_id} declares no Asset outlet"


def test_quarterly_dag_shape(dagbag):
    dag = dagbag.dags["crm_quarterly_reports"]
    assert dag.get_task("send_reports").upstream_task_ids == {"render_reports"}
    assert dag.get_task("render_reports").upstream_task_ids == {"check_contracts"}
    assert dag.get_task("check_contracts").upstream_task_ids == {"compute_metrics"}
    assert "quarter" in dag.params
    for task in dag.tasks:
        assert task.retries >= 1 and task.execution_timeout is not None


def test_dag_files_do_not_import_heavy_modules():
    code = (
        "import sys, runpy\n"
        f"for f in {[str(p) for p in sorted(DAGS_DIR.glob('*.py'))]!r}: runpy.run_path(f)\n"
        "heavy = [m for m in ('pandas', 'great_expectations', 'splink', 'weasyprint', 'pipeline.runner') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_failure_alert_names_dag_task_quarter_and_error(demo_settings):
    from pipeline.alerts import failure_message

    message = failure_message(
        demo_settings,
        "crm_ingest",
        "extract_finance",
        "2026Q3",
        "manual__1",
        "SourceError: finance source: no file matches /x/accounts.xlsx",
    )
    assert message["Subject"] == "[crm-pipeline] FAILED crm_ingest.extract_finance (2026Q3)"
    body = message.get_content()
    assert "no file matches /x/accounts.xlsx" in body and "Run:     manual__1" in body


def test_every_task_alerts_on_failure(dagbag):
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            assert task.on_failure_callback, f"{dag.dag_id}.{task.task_id} sends no alert"
