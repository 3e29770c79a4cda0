"""The project's Airflow deployment for integration tests and the scenario they share.

``deploy`` starts a real Airflow (see ``cluster.py``) with the project's DAGs on the
demo sources, a PostgreSQL scratch schema as warehouse and a loopback SMTP server
(aiosmtpd). Connections come from ``AIRFLOW_CONN_*`` environment variables, except
``crm_finance``, which lives in the metadata database because a test edits it.
"""

from __future__ import annotations

import email
import email.policy
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import psycopg
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from pipeline.warehouse import create_engine, frame_digest, read_table
from tests.airflow.cluster import PG_ADMIN, AirflowCluster, free_port

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
        """A content digest per warehouse table. Bookkeeping aside: ``run_log`` records
        every try, and ``raw_pending`` the records each extract landed that validate has
        not seen yet (an extract that succeeds beside a failing one leaves some).

        With ``drop_lineage`` the raw tables' batch id and extraction time are left out,
        so a new ingest run that lands identical source rows digests the same.
        """
        digests = {}
        for name, frame in self.tables().items():
            if name in ("run_log", "raw_pending"):
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


@contextmanager
def deploy(tmp: Path, demo_sources: Path, executor: str) -> Iterator[Deployment]:
    """Start Airflow with ``executor`` on the demo sources; stop it and drop everything after."""
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
    cluster = AirflowCluster(tmp / "airflow_home", executor, {**connections, **settings_env})
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


def attachments(message: EmailMessage) -> dict[str, bytes]:
    return {part.get_filename(): part.get_content() for part in message.iter_attachments()}


def run_ingest_and_quarterly(deployment: Deployment) -> tuple[str, str]:
    """Trigger crm_ingest, then crm_quarterly_reports for QUARTER; check tables, PDFs, mail.

    Returns the two run ids.
    """
    airflow, inbox = deployment.airflow, deployment.inbox
    ingest = airflow.trigger("crm_ingest")
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
    quarterly_stages = ("quality_findings", "compute_metrics", "check_contracts", "render_reports")
    for stage in (*quarterly_stages, "send_reports"):
        assert (quarterly, stage) in succeeded

    pdfs = sorted((deployment.out_dir / QUARTER).glob("*.pdf"))
    assert len(pdfs) == 2 and all(p.read_bytes().startswith(b"%PDF") for p in pdfs)

    by_recipient = {tuple(sorted(rcpt)): message for rcpt, message in inbox.messages}
    assert len(inbox.messages) == len(SATISFACTION_TO) + len(ARCHIVE_TO), inbox.subjects()
    recipients = sorted(r for rcpt, _ in inbox.messages for r in rcpt)
    assert recipients == sorted(SATISFACTION_TO + ARCHIVE_TO)
    for rcpt, message in by_recipient.items():
        files = attachments(message)
        pdf_names = [name for name in files if name.endswith(".pdf")]
        assert len(pdf_names) == 1 and files[pdf_names[0]].startswith(b"%PDF"), rcpt
        assert QUARTER in message["Subject"]
        expected_pdf = "客户满意度季度报告" if rcpt[0] in SATISFACTION_TO else "档案完善建议报告"
        assert pdf_names[0].startswith(expected_pdf), (rcpt, pdf_names)
        assert (deployment.out_dir / QUARTER / pdf_names[0]).read_bytes() == files[pdf_names[0]]
    return ingest, quarterly
