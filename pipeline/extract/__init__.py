"""Source adapters (one per system) and the stage that lands their rows in ``raw_<dataset>``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime

import pandas as pd

from pipeline import warehouse
from pipeline.datasets import datasets_of
from pipeline.extract import finance, sales, service
from pipeline.settings import Settings
from pipeline.stages import StageContext, StageResult

log = logging.getLogger(__name__)

ADAPTERS: dict[str, Callable[[Settings, str, datetime], Iterator[tuple[str, pd.DataFrame]]]] = {
    "sales": sales.extract,
    "service": service.extract,
    "finance": finance.extract,
}


def land_system(ctx: StageContext, system: str) -> StageResult:
    """Extract every dataset of one source system into ``raw_<dataset>`` (one row per source record).

    All datasets of the system are read first and then written in one transaction, so
    a failing source leaves the previous landing untouched.
    """
    adapter = ADAPTERS[system]
    chunks: dict[str, list[pd.DataFrame]] = {d.name: [] for d in datasets_of(system)}
    for dataset_name, chunk in adapter(ctx.settings, ctx.batch_id, ctx.extracted_at):
        chunks[dataset_name].append(chunk)
    counts: dict[str, int] = {}
    with ctx.engine.begin() as conn:
        for dataset_name, parts in chunks.items():
            table = f"raw_{dataset_name}"
            if warehouse.table_exists(ctx.engine, table):
                conn.exec_driver_sql(f'DELETE FROM "{table}"')
            frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
            counts[dataset_name] = warehouse.insert_frame(conn, table, frame)
    total = sum(counts.values())
    log.info("landed %s rows from %s: %s", total, system, counts)
    return StageResult(stage=f"extract_{system}", rows_in=total, rows_out=total, detail=counts)
