"""The DAGs on a real Airflow 3: ingest, quarterly reports, rerun, failing source, backfill.

One Airflow (api-server, scheduler, dag-processor; metadata in a fresh PostgreSQL
database) serves every test of this module, and the tests run in file order: the
quarterly run reads what the ingest wrote, the rerun repeats the quarterly run, the
failing source breaks an ingest on top of that state. The warehouse is a PostgreSQL
scratch schema; reports go to a loopback SMTP server (aiosmtpd) started here.
Connections come from ``AIRFLOW_CONN_*`` environment variables, except ``crm_finance``,
which lives in the metadata database because the failing-source test edits it.
"""

from __future__ import annotations

import email
import email.policy
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from pipeline.warehouse import create_engine, frame_digest, read_table
from tests.airflow.cluster import PG_ADMIN, AirflowCluster, free_port

pytestmark = [pytest.mark.airflow, pytest.mark.postgres, pytest.mark.slow]

QUARTER = "2026Q3"  # the demo sources (as of 2026-11-23) hold this whole quarter
SATISFACTION_TO = ["ceo@example.com", "cfo@example.com"]
ARCHIVE_TO = ["archive@example.com"]
ALERT_TO = ["oncall@example.com"]


class Inbox:
    """aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [message["Subject"] for _, message in self.messages]


@dataclass
class Deployment:
    airflow: AirflowCluster
    inbox: Inbox
    warehouse_url: str
    out_dir: Path
    finance_dir: Path

    def tables(self) -> dict[str, object]:
        engine = create_engine(self.warehouse_url)
        try:
            return {name: read_table(engine, name) for name in sa.inspect(engine).get_table_names()}
        finally:
            engine.dispose()

    def digests(self, drop_lineage: bool = False) -> dict[str, str]:
        """A content digest per warehouse table (``run_log`` aside: it records every try).

        With ``drop_lineage`` the raw tables' batch id and extraction time are left out,
        so a new ingest run that lands identical source rows digests the same.
        """
        digests = {}
        for name, frame in self.tables().items():
            if name == "run_log":
                continue
            if drop_lineage and name.startswith("raw_"):
                frame = frame.drop(columns=["batch_id", "extracted_at"], errors="ignore")
            digests[name] = frame_digest(frame)
        return digests

    def set_finance_folder(self, path: Path) -> None:
        self.airflow.patch(
            "/api/v2/connections/crm_finance",
            {"connection_id": "crm_finance", "conn_type": "fs", "extra": f'{{"path": "{path}"}}'},
        )


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, demo_sources: Path
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("airflow_it")
    schema = f"crm_it_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    inbox = Inbox()
    smtp_port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    out_dir = tmp / "out"
    connections = {
        "AIRFLOW_CONN_CRM_WAREHOUSE": (
            '{"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres",'
            f' "schema": "test", "extra": {{"options": "-csearch_path={schema}"}}}}'
        ),
        "AIRFLOW_CONN_CRM_SALES": f'{{"conn_type": "sqlite", "host": "{demo_sources / "sales.db"}"}}',
        "AIRFLOW_CONN_CRM_SERVICE": f'{{"conn_type": "sqlite", "host": "{demo_sources / "service.db"}"}}',
        "AIRFLOW_CONN_CRM_SMTP": (
            f'{{"conn_type": "smtp", "host": "127.0.0.1", "port": {smtp_port},'
            ' "extra": {"from_email": "crm-pipeline@example.com"}}'
        ),
    }
    settings_env = {
        "CRM_OUT_DIR": str(out_dir),
        "CRM_REPORTS__SATISFACTION_RECIPIENTS": str(SATISFACTION_TO).replace("'", '"'),
        "CRM_REPORTS__ARCHIVE_RECIPIENTS": str(ARCHIVE_TO).replace("'", '"'),
        "CRM_REPORTS__ALERT_RECIPIENTS": str(ALERT_TO).replace("'", '"'),
        "CRM_SMTP__RETRIES": "1",
        # Fail fast: one retry after about a second instead of the production minutes.
        "CRM_AIRFLOW_RETRIES": "1",
        "CRM_AIRFLOW_RETRY_DELAY_SECONDS": "1",
    }
    cluster = AirflowCluster(tmp / "airflow_home", "LocalExecutor", {**connections, **settings_env})
    try:
        cluster.start()
        cluster.post(
            "/api/v2/connections",
            {
                "connection_id": "crm_finance",
                "conn_type": "fs",
                "extra": f'{{"path": "{demo_sources / "finance"}"}}',
            },
        )
        yield Deployment(
            cluster,
            inbox,
            f"{PG_ADMIN.replace('postgresql://', 'postgresql+psycopg://')}"
            f"?options=-csearch_path%3D{schema}",
            out_dir,
            demo_sources / "finance",
        )
    finally:
        try:
            cluster.stop()
        finally:
            smtp.stop()
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _attachments(message: EmailMessage) -> dict[str, bytes]:
    return {part.get_filename(): part.get_content() for part in message.iter_attachments()}


def test_ingest_then_quarterly_reports(deployment: Deployment):
    airflow, inbox = deployment.airflow, deployment.inbox
    ingest = airflow.trigger("crm_ingest", {"quarter": QUARTER})
    assert airflow.wait_for_run("crm_ingest", ingest) == "success", airflow.explain(
        "crm_ingest", ingest
    )
    quarterly = airflow.trigger("crm_quarterly_reports", {"quarter": QUARTER})
    assert airflow.wait_for_run("crm_quarterly_reports", quarterly) == "success", airflow.explain(
        "crm_quarterly_reports", quarterly
    )

    tables = deployment.tables()
    customers = tables["core_customers"]
    assert 100 <= len(customers) <= 200 and customers["customer_id"].is_unique
    metrics = tables["mart_metrics"]
    assert set(metrics["quarter"]) >= {QUARTER}
    assert len(tables["mart_customer_quarter"].query("quarter == @QUARTER")) > 0
    assert len(tables["dq_findings"].query("quarter == @QUARTER")) > 0
    run_log = tables["run_log"]
    succeeded = set(
        run_log.query("status == 'success'")[["batch_id", "stage"]].itertuples(index=False)
    )
    for stage in (
        "extract_sales",
        "extract_service",
        "extract_finance",
        "validate",
        "resolve_customers",
    ):
        assert (ingest, stage) in succeeded
    for stage in ("compute_metrics", "check_contracts", "render_reports", "send_reports"):
        assert (quarterly, stage) in succeeded

    pdfs = sorted((deployment.out_dir / QUARTER).glob("*.pdf"))
    assert len(pdfs) == 2 and all(p.read_bytes().startswith(b"%PDF") for p in pdfs)

    by_recipient = {tuple(sorted(rcpt)): message for rcpt, message in inbox.messages}
    assert len(inbox.messages) == len(SATISFACTION_TO) + len(ARCHIVE_TO), inbox.subjects()
    recipients = sorted(r for rcpt, _ in inbox.messages for r in rcpt)
    assert recipients == sorted(SATISFACTION_TO + ARCHIVE_TO)
    for rcpt, message in by_recipient.items():
        files = _attachments(message)
        pdf_names = [name for name in files if name.endswith(".pdf")]
        assert len(pdf_names) == 1 and files[pdf_names[0]].startswith(b"%PDF"), rcpt
        assert QUARTER in message["Subject"]
        expected_pdf = "客户满意度季度报告" if rcpt[0] in SATISFACTION_TO else "档案完善建议报告"
        assert pdf_names[0].startswith(expected_pdf), (rcpt, pdf_names)
        assert (deployment.out_dir / QUARTER / pdf_names[0]).read_bytes() == files[pdf_names[0]]


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
