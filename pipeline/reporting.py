"""Report stages: read the warehouse, build contexts, write PDFs (and worklists), send them.

``render_reports(ctx)`` writes ``<out_dir>/<quarter>/`` and ``send_reports(ctx)`` mails what
``render_reports`` wrote (rendering first when the files are missing).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine

from pipeline import warehouse, worker
from pipeline.quarters import Quarter
from pipeline.reports.context import (
    ReportDataError,
    build_archive_context,
    build_satisfaction_context,
)
from pipeline.reports.pdf import PdfAttachment, encrypt_pdf, layout_pdf, write_pdf
from pipeline.reports.render import render_html, translator
from pipeline.reports.worklist import worklist_csv, worklist_xlsx
from pipeline.settings import Settings
from pipeline.stages import StageContext, StageResult

log = logging.getLogger(__name__)

REPORTS = ("satisfaction", "archive")


@dataclass
class RenderedReport:
    """One rendered report on disk plus what the e-mail needs."""

    report: str
    quarter: str
    title: str
    pdf: Path
    extra_files: list[Path]
    headline: list[dict[str, str]]
    seconds: float


def _read(engine: Engine, table: str, **partition: Any) -> pd.DataFrame | None:
    if not warehouse.table_exists(engine, table):
        log.warning("table %s is missing: its report section will show no data", table)
        return None
    return warehouse.read_table(engine, table, **partition)


def _read_quarters(engine: Engine, table: str, quarters: list[Quarter]) -> pd.DataFrame | None:
    frames = [f for q in quarters if (f := _read(engine, table, quarter=str(q))) is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def _previous_findings(engine: Engine, quarter: Quarter) -> pd.DataFrame | None:
    """The findings of the quarter before ``quarter``, or None when that quarter was never
    reviewed (the first run): the report then shows "–", not a change from zero findings."""
    previous = str(quarter.previous())
    findings = _read(engine, "dq_findings", quarter=previous)
    if findings is None or not findings.empty:
        return findings
    reviewed = warehouse.has_rows(
        engine, "run_log", stage="quality_findings", quarter=previous, status="success"
    )
    return findings if reviewed else None


def _rows_used(engine: Engine) -> dict[str, int]:
    from pipeline.datasets import DATASETS

    counts = {}
    for name in DATASETS:
        if warehouse.table_exists(engine, f"stg_{name}"):
            with engine.connect() as conn:
                counts[name] = int(
                    conn.exec_driver_sql(f'SELECT COUNT(*) FROM "stg_{name}"').scalar()
                )
    return counts


def report_dir(settings: Settings, quarter: Quarter) -> Path:
    return Path(settings.out_dir) / str(quarter)


def render_satisfaction(settings: Settings, engine: Engine, quarter: Quarter) -> RenderedReport:
    """Build, render and write the satisfaction report PDF for ``quarter``."""
    started = time.perf_counter()
    trend = [quarter.shift(-i) for i in range(settings.metrics.trend_quarters)]
    context = build_satisfaction_context(
        _read_quarters(engine, "mart_metrics", trend),
        _read_quarters(engine, "mart_customer_quarter", [quarter.previous(), quarter]),
        _read(engine, "quarantine"),
        settings,
        quarter,
        rows_used=_rows_used(engine),
    )
    pdf = report_dir(settings, quarter) / f"{context['title']}_{quarter}.pdf"
    write_pdf(render_html("satisfaction.html", context), pdf)
    return RenderedReport(
        "satisfaction",
        str(quarter),
        context["title"],
        pdf,
        [],
        context["headline"],
        time.perf_counter() - started,
    )


def render_archive(settings: Settings, engine: Engine, quarter: Quarter) -> RenderedReport:
    """Build, render and write the archive-review PDF plus its CSV/XLSX worklist."""
    started = time.perf_counter()
    context = build_archive_context(
        _read(engine, "dq_findings", quarter=str(quarter)),
        _previous_findings(engine, quarter),
        _read(engine, "core_customers"),
        _read_quarters(engine, "mart_customer_quarter", [quarter.previous(), quarter]),
        _read(engine, "core_match_review"),
        _read(engine, "core_resolution_events", quarter=str(quarter)),
        settings,
        quarter,
        xref=_read(engine, "core_customer_xref"),
    )
    return write_archive(context, settings, quarter, started)


# A worklist this long is written to its workbook in a worker process while the PDF is
# laid out (XlsxWriter takes about 7 s for 95,000 rows); a shorter one in this process.
WORKBOOK_IN_WORKER_ROWS = 20_000


def write_archive(
    context: dict[str, Any], settings: Settings, quarter: Quarter, started: float | None = None
) -> RenderedReport:
    """Write the archive PDF (worklist embedded) and the worklist files beside it."""
    started = started if started is not None else time.perf_counter()
    language = context["language"]
    t = translator(language)
    folder = report_dir(settings, quarter)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{t('arc.worklist')}_{quarter}"
    csv_path, xlsx_path = folder / f"{stem}.csv", folder / f"{stem}.xlsx"
    with (
        tempfile.TemporaryDirectory(prefix="crm-worklist-") as scratch,
        ThreadPoolExecutor(1) as pool,
    ):
        if len(context["worklist"]) >= WORKBOOK_IN_WORKER_ROWS:
            workbook = pool.submit(
                worker.call,
                "pipeline.reports.worklist:worklist_xlsx",
                Path(scratch),
                "worklist",
                worklist=context["worklist"],
                language=language,
            )
        else:
            workbook = pool.submit(worklist_xlsx, context["worklist"], language)
        csv_path.write_bytes(worklist_csv(context["worklist"], language))
        attachments = [PdfAttachment(csv_path.name, csv_path.read_bytes(), t("arc.worklist"))]
        # The PDF shows the first rows of the merge and review tables; the files hold them all.
        evidence = []
        for name, frame in context.get("evidence", {}).items():
            if frame is None or frame.empty:
                continue
            path = folder / f"{t(f'arc.{name}')}_{quarter}.csv"
            path.write_bytes(frame.to_csv(index=False).encode("utf-8-sig"))
            evidence.append(PdfAttachment(path.name, path.read_bytes(), t(f"arc.{name}")))
        document = layout_pdf(render_html("archive.html", context))
        xlsx_path.write_bytes(workbook.result())
    attachments.append(PdfAttachment(xlsx_path.name, xlsx_path.read_bytes(), t("arc.worklist")))
    pdf = folder / f"{context['title']}_{quarter}.pdf"
    write_pdf(document, pdf, attachments=attachments + evidence)
    if settings.reports.archive_pdf_password:
        encrypt_pdf(pdf, settings.reports.archive_pdf_password)
    return RenderedReport(
        "archive",
        str(quarter),
        context["title"],
        pdf,
        [csv_path, xlsx_path],
        context["headline"],
        time.perf_counter() - started,
    )


def _manifest_path(settings: Settings, quarter: Quarter) -> Path:
    return report_dir(settings, quarter) / "manifest.json"


def satisfaction_in_worker(url: str, settings: Settings, quarter: Quarter) -> RenderedReport:
    """:func:`render_satisfaction` on the warehouse at ``url`` (in a worker process)."""
    engine = warehouse.create_engine(url)
    try:
        return render_satisfaction(settings, engine, quarter)
    finally:
        engine.dispose()


def _check_metrics(engine: Engine, quarter: Quarter) -> None:
    """A clear error when the quarter's metrics were never computed: the reports would show
    every customer unclassified and every rate empty."""
    if not warehouse.has_rows(engine, "mart_metrics", quarter=str(quarter)):
        raise ReportDataError(
            f"mart_metrics has no rows for {quarter}: compute_metrics has not run for it "
            f"(crm-pipeline stage compute_metrics --quarter {quarter}, or crm-pipeline run "
            f"--quarter {quarter})"
        )


def render_reports(ctx: StageContext) -> StageResult:
    """Stage: render both reports for ``ctx.quarter`` into ``out_dir/<quarter>/``.

    The satisfaction report is rendered in a worker process while this one renders the
    archive review (WeasyPrint and the worklist workbook are Python, one core each); both
    here, one after the other, when another process could not open the warehouse."""
    _check_metrics(ctx.engine, ctx.quarter)
    if not warehouse.shared(ctx.engine):
        rendered = [
            render_satisfaction(ctx.settings, ctx.engine, ctx.quarter),
            render_archive(ctx.settings, ctx.engine, ctx.quarter),
        ]
    else:
        with (
            tempfile.TemporaryDirectory(prefix="crm-render-") as scratch,
            ThreadPoolExecutor(1) as pool,
        ):
            satisfaction = pool.submit(
                worker.call,
                "pipeline.reporting:satisfaction_in_worker",
                Path(scratch),
                "satisfaction",
                url=ctx.engine.url.render_as_string(hide_password=False),
                settings=ctx.settings,
                quarter=ctx.quarter,
            )
            archive = render_archive(ctx.settings, ctx.engine, ctx.quarter)
            rendered = [satisfaction.result(), archive]
    manifest = {
        r.report: {
            "title": r.title,
            "pdf": str(r.pdf),
            "extra_files": [str(p) for p in r.extra_files],
            "headline": r.headline,
        }
        for r in rendered
    }
    _manifest_path(ctx.settings, ctx.quarter).write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    return StageResult(
        "render_reports",
        rows_out=len(rendered),
        detail={r.report: {"pdf": str(r.pdf), "seconds": round(r.seconds, 2)} for r in rendered},
    )


def send_reports(ctx: StageContext) -> StageResult:
    """Stage: e-mail each rendered report to its distribution list (idempotent per recipient)."""
    from pipeline.delivery import DeliveryError, ReportEmail, send_report

    manifest_file = _manifest_path(ctx.settings, ctx.quarter)
    if not manifest_file.is_file():
        render_reports(ctx)
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    recipients = {
        "satisfaction": ctx.settings.reports.satisfaction_recipients,
        "archive": ctx.settings.reports.archive_recipients,
    }
    detail: dict[str, Any] = {}
    errors: list[str] = []
    sent = 0
    for report in REPORTS:
        entry = manifest[report]
        email = ReportEmail(
            report=report,
            quarter=str(ctx.quarter),
            title=entry["title"],
            headline=entry["headline"],
            attachments=[Path(entry["pdf"]), *(Path(p) for p in entry["extra_files"])],
            language=ctx.settings.reports.language,
        )
        try:
            outcome = send_report(ctx.engine, ctx.settings.smtp, email, recipients[report])
        except DeliveryError as error:
            # Try the other report too; the run still fails below with every error named.
            errors.append(f"{report}: {error}")
            continue
        detail[report] = outcome
        sent += len(outcome["sent"])
    if errors:
        raise DeliveryError("; ".join(errors))
    return StageResult("send_reports", rows_in=len(REPORTS), rows_out=sent, detail=detail)


def report_command(
    settings: Settings, engine: Engine, quarter: Quarter, send: bool, batch_id: str, extracted_at
) -> list[StageResult]:
    """What ``crm-pipeline report --quarter Q [--send]`` runs."""
    ctx = StageContext(settings, engine, quarter, batch_id, extracted_at)
    results = [render_reports(ctx)]
    if send:
        results.append(send_reports(ctx))
    return results
