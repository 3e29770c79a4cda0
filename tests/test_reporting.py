"""The report stages end to end on a SQLite warehouse filled with hand-built frames."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import socket
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from pipeline.delivery import DeliveryError
from pipeline.reporting import render_reports, send_reports
from pipeline.reports.context import ReportDataError
from pipeline.settings import Settings
from pipeline.stages import StageContext
from pipeline.warehouse import create_engine, read_table, replace_partition, replace_table
from tests.reports.frames import (
    QUARTER,
    customer_quarter_frame,
    customers_frame,
    findings_frame,
    metrics_frame,
    review_frame,
)


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _context(tmp_path: Path, port: int = 25) -> StageContext:
    settings = Settings(
        warehouse_url=f"sqlite:///{tmp_path / 'wh.db'}",
        out_dir=tmp_path / "out",
        smtp={"host": "127.0.0.1", "port": port, "timeout_seconds": 5, "retries": 1},
        reports={
            "satisfaction_recipients": ["ceo@example.cn"],
            "archive_recipients": ["archive@example.cn"],
        },
    )
    engine = create_engine(settings.warehouse_url)
    return StageContext(settings, engine, QUARTER, "b1", datetime(2026, 10, 1))


def _fill(ctx: StageContext) -> None:
    metrics = metrics_frame()
    for quarter, part in metrics.groupby("quarter"):
        replace_partition(ctx.engine, "mart_metrics", part.drop(columns="quarter"), quarter=quarter)
    cq = customer_quarter_frame()
    for quarter, part in cq.groupby("quarter"):
        replace_partition(
            ctx.engine, "mart_customer_quarter", part.drop(columns="quarter"), quarter=quarter
        )
    replace_partition(
        ctx.engine, "dq_findings", findings_frame(30).drop(columns="quarter"), quarter=str(QUARTER)
    )
    replace_table(ctx.engine, "core_customers", customers_frame())
    replace_table(ctx.engine, "core_match_review", review_frame())
    # core_resolution_events and quarantine are deliberately missing: those sections say "no data"


def test_render_then_send_both_reports(tmp_path: Path) -> None:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        ctx = _context(tmp_path, port)
        _fill(ctx)
        rendered = render_reports(ctx)
        folder = tmp_path / "out" / "2026Q3"
        names = sorted(p.name for p in folder.iterdir())
        assert names == [
            "manifest.json",
            "客户满意度季度报告_2026Q3.pdf",
            "待人工复核的疑似重复_2026Q3.csv",
            "整改清单_2026Q3.csv",
            "整改清单_2026Q3.xlsx",
            "档案完善建议报告_2026Q3.pdf",
        ]
        assert set(rendered.detail) == {"satisfaction", "archive"}
        archive_text = subprocess.run(
            ["pdftotext", str(folder / "档案完善建议报告_2026Q3.pdf"), "-"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "本季度合并的重复档案" in archive_text and "本期无数据。" in archive_text
        first = send_reports(ctx)
        again = send_reports(ctx)
    finally:
        controller.stop()
    assert first.rows_out == 2 and again.rows_out == 0
    assert [m["To"] for m in inbox.messages] == ["ceo@example.cn", "archive@example.cn"]
    archive_mail = inbox.messages[1]
    assert archive_mail["Subject"] == "档案完善建议报告 2026Q3"
    assert [p.get_filename() for p in archive_mail.iter_attachments()] == [
        "档案完善建议报告_2026Q3.pdf",
        "整改清单_2026Q3.csv",
        "整改清单_2026Q3.xlsx",
    ]
    deliveries = read_table(ctx.engine, "report_deliveries")
    assert sorted(deliveries["report"]) == ["archive", "satisfaction"]
    assert set(deliveries["status"]) == {"sent"}


def test_archive_compares_with_the_previous_quarter_only_when_it_was_reviewed(
    tmp_path: Path,
) -> None:
    import json

    import pandas as pd

    ctx = _context(tmp_path)
    _fill(ctx)

    def changes() -> dict[str, str]:
        render_reports(ctx)
        manifest = json.loads((tmp_path / "out" / "2026Q3" / "manifest.json").read_text("utf-8"))
        return {h["label"]: h["change"] for h in manifest["archive"]["headline"]}

    # First run: 2026Q2 was never reviewed, so there is nothing to compare with (not "+N").
    assert changes()["档案不完整"] == "–"
    # 2026Q2 was reviewed and found nothing: now the change from zero is real.
    replace_partition(
        ctx.engine,
        "run_log",
        pd.DataFrame([{"quarter": "2026Q2", "status": "success", "rows_in": 1, "rows_out": 0}]),
        batch_id="b0",
        stage="quality_findings",
    )
    assert changes()["档案不完整"].startswith("+")


def test_satisfaction_needs_mart_metrics(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    with pytest.raises(ReportDataError, match="mart_metrics"):
        render_reports(ctx)


def test_send_failure_is_reported_and_not_marked_sent(tmp_path: Path) -> None:
    ctx = _context(tmp_path, _free_port())  # nothing listens
    _fill(ctx)
    with pytest.raises(DeliveryError, match=r"satisfaction: .*archive: "):
        send_reports(ctx)
    deliveries = read_table(ctx.engine, "report_deliveries")
    assert sorted(deliveries["report"]) == ["archive", "satisfaction"]
    assert set(deliveries["status"]) == {"failed"}


def test_an_in_memory_warehouse_renders_both_reports_in_this_process(tmp_path: Path) -> None:
    """A worker process could not open an in-memory warehouse: both reports render here."""
    ctx = dataclasses.replace(_context(tmp_path), engine=create_engine("sqlite://"))
    _fill(ctx)
    rendered = render_reports(ctx)
    assert set(rendered.detail) == {"satisfaction", "archive"}
    pdfs = sorted((tmp_path / "out" / "2026Q3").glob("*.pdf"))
    assert len(pdfs) == 2 and all(p.read_bytes().startswith(b"%PDF") for p in pdfs)


def test_a_quarter_whose_metrics_were_never_computed_is_refused_before_rendering(
    tmp_path: Path,
) -> None:
    ctx = _context(tmp_path)
    _fill(ctx)
    earlier = dataclasses.replace(ctx, quarter=ctx.quarter.shift(-12))
    with pytest.raises(ReportDataError, match=r"mart_metrics has no rows for .*compute_metrics"):
        render_reports(earlier)
    assert not (tmp_path / "out" / str(earlier.quarter)).exists()
