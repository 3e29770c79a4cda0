"""The DAGs on a real Airflow 3 (LocalExecutor): ingest, quarterly reports, rerun, failing source, backfill.

One Airflow (api-server, scheduler, dag-processor; metadata in a fresh PostgreSQL
database) serves every test of this module, and the tests run in file order: the
quarterly run reads what the ingest wrote, the rerun repeats the quarterly run, the
failing source breaks an ingest on top of that state, the backfill reports two past
quarters from the same warehouse.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.airflow.deployment import ALERT_TO, QUARTER, Deployment, run_ingest_and_quarterly

pytestmark = [pytest.mark.airflow, pytest.mark.postgres, pytest.mark.slow]


def test_ingest_then_quarterly_reports(deployment: Deployment):
    run_ingest_and_quarterly(deployment)


def test_rerun_of_quarterly_run_changes_nothing(deployment: Deployment):
    airflow = deployment.airflow
    (run,) = airflow.runs("crm_quarterly_reports", run_types={"manual"})
    before = deployment.digests()
    sent_before = len(deployment.inbox.messages)

    airflow.clear_run("crm_quarterly_reports", run["dag_run_id"])
    assert airflow.wait_for_run("crm_quarterly_reports", run["dag_run_id"]) == "success"

    after = deployment.digests()
    assert after == before, {t for t in before if before[t] != after.get(t)}
    assert len(deployment.inbox.messages) == sent_before, deployment.inbox.subjects()[sent_before:]
    log = deployment.tables()["run_log"]
    assert log.query("batch_id == @run['dag_run_id'] and stage == 'send_reports'")[
        "status"
    ].tolist() == ["success"]


def test_failing_source_fails_at_extract_finance_alerts_and_keeps_the_warehouse(
    deployment: Deployment, tmp_path: Path
):
    airflow, inbox = deployment.airflow, deployment.inbox
    before = deployment.digests(drop_lineage=True)
    sent_before = len(inbox.messages)
    missing = tmp_path / "no_such_finance_folder"
    deployment.set_finance_folder(missing)
    try:
        run_id = airflow.trigger("crm_ingest", {"quarter": QUARTER})
        assert airflow.wait_for_run("crm_ingest", run_id) == "failed"
    finally:
        deployment.set_finance_folder(deployment.finance_dir)

    states = airflow.task_states("crm_ingest", run_id)
    assert states["extract_finance"] == "failed"
    assert states["validate"] == "upstream_failed"
    assert states["resolve_customers"] == "upstream_failed"
    # One retry (CRM_AIRFLOW_RETRIES=1): the last try's log names the stage, file and quarter.
    task_log = airflow.task_log("crm_ingest", run_id, "extract_finance", try_number=2)
    assert f"stage extract_finance failed for quarter {QUARTER}" in task_log, task_log[-2000:]
    assert f"finance source: no file matches {missing}" in task_log

    alerts = [(rcpt, m) for rcpt, m in inbox.messages[sent_before:] if "FAILED" in m["Subject"]]
    assert len(alerts) == 1, inbox.subjects()[sent_before:]
    rcpt, alert = alerts[0]
    assert rcpt == ALERT_TO
    assert alert["Subject"] == f"[crm-pipeline] FAILED crm_ingest.extract_finance ({QUARTER})"
    body = alert.get_content()
    assert "DAG:     crm_ingest" in body and "Task:    extract_finance" in body
    assert f"Run:     {run_id}" in body and f"no file matches {missing}" in body
    assert len(inbox.messages) == sent_before + 1  # nothing else was mailed

    assert deployment.digests(drop_lineage=True) == before
    failed = deployment.tables()["run_log"].query("batch_id == @run_id and status == 'failed'")
    assert failed["stage"].tolist() == ["extract_finance"]
    assert "no file matches" in failed["error"].iloc[0]


def test_backfill_reports_past_quarters_with_their_own_findings(deployment: Deployment):
    airflow, inbox = deployment.airflow, deployment.inbox
    sent_before = len(inbox.messages)
    # Logical dates are the quarters' starts in Asia/Shanghai: 2026Q1 and 2026Q2.
    airflow.airflow(
        "backfill",
        "create",
        "--dag-id",
        "crm_quarterly_reports",
        "--from-date",
        "2025-12-31T16:00:00+00:00",
        "--to-date",
        "2026-03-31T16:00:00+00:00",
    )
    runs = airflow.wait_for_runs("crm_quarterly_reports", run_type="backfill", count=2)
    assert {run["state"] for run in runs} == {"success"}, [
        airflow.explain("crm_quarterly_reports", run["dag_run_id"]) for run in runs
    ]

    tables = deployment.tables()
    findings = tables["dq_findings"]
    for quarter in ("2026Q1", "2026Q2"):
        pdfs = sorted((deployment.out_dir / quarter).glob("*.pdf"))
        assert len(pdfs) == 2, pdfs
        assert len(tables["mart_metrics"].query("quarter == @quarter")) > 0
        review = findings.query("quarter == @quarter")
        assert len(review) > 0, f"no findings for {quarter}"
    # Each quarter was reviewed at its own end: staleness is measured to a different day.
    stale_details = {
        quarter: set(findings.query("quarter == @quarter and finding == 'stale_file'")["detail"])
        for quarter in ("2026Q1", "2026Q2", QUARTER)
    }
    assert stale_details["2026Q1"] == {"last update more than 92 days before 2026-03-31"}
    assert stale_details["2026Q2"] == {"last update more than 92 days before 2026-06-30"}
    assert stale_details[QUARTER] == {"last update more than 92 days before 2026-09-30"}

    new_subjects = inbox.subjects()[sent_before:]
    for quarter in ("2026Q1", "2026Q2"):
        assert sum(quarter in subject for subject in new_subjects) == 3, new_subjects
