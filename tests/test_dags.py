"""DAG integrity: the files import without errors, are wired as documented, and retry."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[1] / "dags"


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
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
    assert dag.get_task("render_reports").upstream_task_ids == {
        "check_contracts",
        "quality_findings",
    }
    assert dag.get_task("check_contracts").upstream_task_ids == {"compute_metrics"}
    assert "quarter" in dag.params
    for task in dag.tasks:
        assert task.retries >= 1 and task.execution_timeout is not None


HEAVY_MODULES = ("pandas", "sqlalchemy", "great_expectations", "splink", "weasyprint")


def _modules_after(statement: str) -> set[str]:
    """Run ``statement`` in a fresh interpreter; the names of the modules it imported."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=DAGS_DIR
    )
    return set(result.stdout.split())


@pytest.mark.parametrize("dag_file", sorted(DAGS_DIR.glob("*.py")), ids=lambda p: p.stem)
def test_dag_file_parses_without_heavy_imports(dag_file):
    # Airflow itself imports SQLAlchemy; the DAG file must not add any heavy module of its own.
    airflow_only = _modules_after("import pendulum, airflow.sdk")
    parsed = _modules_after(f"import runpy; runpy.run_path({str(dag_file)!r})")
    assert "pipeline.airflow_tasks" in parsed  # the check sees the DAG's own imports
    added = {name.split(".")[0] for name in parsed - airflow_only}
    assert added.isdisjoint(HEAVY_MODULES), added & set(HEAVY_MODULES)
    assert "pandas" not in parsed
    assert {name for name in parsed if name.startswith("pipeline.")} == {"pipeline.airflow_tasks"}


def test_retries_can_be_overridden_by_environment():
    from pipeline.airflow_tasks import default_args

    production = default_args(3, timedelta(minutes=5), timedelta(hours=2))
    assert production["retries"] == 3 and production["retry_delay"] == timedelta(minutes=5)
    assert production["retry_exponential_backoff"] > 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CRM_AIRFLOW_RETRIES", "1")
        patch.setenv("CRM_AIRFLOW_RETRY_DELAY_SECONDS", "2")
        overridden = default_args(3, timedelta(minutes=5), timedelta(hours=2))
        assert overridden["retries"] == 1 and overridden["retry_delay"] == timedelta(seconds=2)
        patch.setenv("CRM_AIRFLOW_RETRIES", "many")
        with pytest.raises(ValueError, match="CRM_AIRFLOW_RETRIES='many' is not a number"):
            default_args(3, timedelta(minutes=5), timedelta(hours=2))


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


def test_connections_from_environment_override_settings(tmp_path, monkeypatch):
    from pipeline.airflow_tasks import airflow_settings

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv(
        "AIRFLOW_CONN_CRM_WAREHOUSE",
        '{"conn_type": "postgres", "host": "db.example", "port": 5432, "login": "etl",'
        ' "password": "s3cret", "schema": "crm", "extra": {"options": "-csearch_path=dw"}}',
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_CRM_SALES", f'{{"conn_type": "sqlite", "host": "{tmp_path}/sales.db"}}'
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_CRM_FINANCE", '{"conn_type": "fs", "extra": {"path": "/mnt/fin"}}'
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_CRM_SMTP",
        '{"conn_type": "smtp", "host": "mail.example", "port": 587, "login": "crm",'
        ' "password": "pw", "extra": {"from_email": "crm@example.com", "starttls": true}}',
    )
    settings = airflow_settings()
    assert (
        settings.warehouse_url
        == "postgresql+psycopg://etl:s3cret@db.example:5432/crm?options=-csearch_path%3Ddw"
    )
    assert settings.sources.sales_url == f"sqlite:///{tmp_path}/sales.db"
    assert settings.sources.finance_dir == Path("/mnt/fin")
    assert (settings.smtp.host, settings.smtp.port, settings.smtp.username) == (
        "mail.example",
        587,
        "crm",
    )
    assert settings.smtp.sender == "crm@example.com" and settings.smtp.starttls
    assert "s3cret" not in str(settings.redacted()) and "'pw'" not in str(settings.redacted())


def test_manual_run_without_data_interval_uses_its_queued_instant():
    from types import SimpleNamespace

    from pipeline.airflow_tasks import quarter_for, run_interval, run_quarter

    queued = datetime(2026, 9, 30, 17, 0, tzinfo=UTC)  # 2026-10-01 01:00 in Shanghai
    context = {"dag_run": SimpleNamespace(run_after=queued), "params": {}}
    assert run_interval(context) == (queued, queued)
    assert str(quarter_for({}, run_interval(context)[0], "Asia/Shanghai")) == "2026Q4"
    assert str(quarter_for({"quarter": "2026Q2"}, queued, "Asia/Shanghai")) == "2026Q2"
    # Ingest stages work for the quarter the run was queued in, reports for the last one ended.
    assert str(run_quarter("validate", context, "Asia/Shanghai")) == "2026Q4"
    assert str(run_quarter("render_reports", context, "Asia/Shanghai")) == "2026Q3"
    named = {**context, "params": {"quarter": "2025Q4"}}
    assert str(run_quarter("send_reports", named, "Asia/Shanghai")) == "2025Q4"
    scheduled = {
        "dag_run": SimpleNamespace(run_after=queued),
        "data_interval_start": datetime(2026, 6, 30, 16, tzinfo=UTC),
        "data_interval_end": datetime(2026, 9, 30, 16, tzinfo=UTC),
    }
    assert str(run_quarter("render_reports", scheduled, "Asia/Shanghai")) == "2026Q3"
    assert run_interval(scheduled) == (
        datetime(2026, 6, 30, 16, tzinfo=UTC),
        datetime(2026, 9, 30, 16, tzinfo=UTC),
    )
