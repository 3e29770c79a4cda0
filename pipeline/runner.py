"""Runs stages by name and records each one in the warehouse's ``run_log``.

The CLI and every Airflow task go through :func:`run_stage`, so both run the same code.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial

import pandas as pd

from pipeline import warehouse
from pipeline.quarters import Quarter
from pipeline.settings import Settings
from pipeline.stages import Stage, StageContext, StageResult

log = logging.getLogger(__name__)

# stage name -> "module:function" (imported lazily so that DAG files parse fast)
STAGES: dict[str, str] = {
    "extract_sales": "pipeline.extract:land_system:sales",
    "extract_service": "pipeline.extract:land_system:service",
    "extract_finance": "pipeline.extract:land_system:finance",
    "validate": "pipeline.validation:run",
    "resolve_customers": "pipeline.resolution:run",
    "quality_findings": "pipeline.validation.findings:run_quality_findings",
    "compute_metrics": "pipeline.metrics:run",
    "check_contracts": "pipeline.validation.contracts:run_contracts",
    "render_reports": "pipeline.reporting:render_reports",
    "send_reports": "pipeline.reporting:send_reports",
}
INGEST_STAGES = (
    "extract_sales",
    "extract_service",
    "extract_finance",
    "validate",
    "resolve_customers",
)
# quality_findings: the archive review of the reported quarter (a backfilled quarter too).
QUARTERLY_STAGES = ("quality_findings", "compute_metrics", "check_contracts", "render_reports")


class StageFailed(RuntimeError):
    """A stage raised; the message names the stage and the quarter."""


def load_stage(name: str) -> Stage:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    module_name, function_name, *args = STAGES[name].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    return partial(function, system=args[0]) if args else function


def make_context(
    settings: Settings, quarter: Quarter, batch_id: str, extracted_at: datetime
) -> StageContext:
    return StageContext(
        settings=settings,
        engine=warehouse.create_engine(settings.warehouse_url),
        quarter=quarter,
        batch_id=batch_id,
        extracted_at=extracted_at,
    )


def run_stage(ctx: StageContext, name: str) -> StageResult:
    """Run one stage and record it (status, rows, seconds, error) in ``run_log``."""
    started = time.perf_counter()
    status, error = "success", None
    try:
        result = load_stage(name)(ctx)
        result.stage = name  # the runner's name is the one users type and see
        return result
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise StageFailed(
            f"stage {name} failed for quarter {ctx.quarter} (batch {ctx.batch_id}): {exc}"
        ) from exc
    finally:
        seconds = time.perf_counter() - started
        row = {
            "batch_id": ctx.batch_id,
            "stage": name,
            "quarter": str(ctx.quarter),
            "status": status,
            "seconds": round(seconds, 3),
            "error": error,
        }
        if status == "success":
            row.update(rows_in=result.rows_in, rows_out=result.rows_out)
        _record(ctx, row)


def _record(ctx: StageContext, row: dict) -> None:
    frame = pd.DataFrame([row]).reindex(
        columns=[
            "batch_id",
            "stage",
            "quarter",
            "status",
            "rows_in",
            "rows_out",
            "seconds",
            "error",
        ]
    )
    frame["rows_in"] = frame["rows_in"].astype("Int64")
    frame["rows_out"] = frame["rows_out"].astype("Int64")
    # Parallel tasks (the three extracts) may all find run_log missing and create it at
    # once; the losers of that race try again and find the table.
    for attempt in range(4):
        try:
            warehouse.replace_partition(
                ctx.engine,
                "run_log",
                frame.drop(columns=["batch_id", "stage"]),
                batch_id=row["batch_id"],
                stage=row["stage"],
            )
            return
        except Exception:  # the run log must never hide the stage's own error
            if attempt == 3:
                log.exception("could not record stage %s in run_log", row["stage"])
            else:
                time.sleep(0.5 * (attempt + 1))


def run_stages(
    ctx: StageContext,
    names: Sequence[str],
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[StageResult, float], None] | None = None,
) -> list[StageResult]:
    """Run stages in order; stop at the first failure (raising :class:`StageFailed`)."""
    results = []
    for name in names:
        if on_start:
            on_start(name)
        started = time.perf_counter()
        result = run_stage(ctx, name)
        if on_done:
            on_done(result, time.perf_counter() - started)
        results.append(result)
    return results
