"""Source adapters (one per system) and the stage that lands their rows in ``raw_<dataset>``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from pipeline import warehouse
from pipeline.datasets import datasets_of
from pipeline.extract import finance, sales, service
from pipeline.extract.base import house_frame
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

    Chunks are written as they are read, so memory stays flat however long the history;
    all datasets of the system are replaced in one transaction, so a source that fails
    half-way leaves the previous landing untouched.
    """
    adapter = ADAPTERS[system]
    counts: dict[str, int] = {d.name: 0 for d in datasets_of(system)}
    with ctx.engine.begin() as conn:
        for dataset_name in counts:
            # Dropped, not emptied: the new rows get a fresh table (no dead rows left behind
            # for validate to scan) whose columns are typed from this batch (all text).
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "raw_{dataset_name}"')
        for dataset_name, chunk in adapter(ctx.settings, ctx.batch_id, ctx.extracted_at):
            counts[dataset_name] += warehouse.insert_frame(conn, f"raw_{dataset_name}", chunk)
        for dataset in datasets_of(system):  # a source with no rows still lands its table
            if not sa.inspect(conn).has_table(f"raw_{dataset.name}"):
                no_rows = pd.DataFrame({raw_name: [] for raw_name in dataset.rename}, dtype=object)
                empty = house_frame(no_rows, dataset, "(no rows)", ctx.batch_id, ctx.extracted_at)
                warehouse.insert_frame(conn, f"raw_{dataset.name}", empty)
    total = sum(counts.values())
    log.info("landed %s rows from %s: %s", total, system, counts)
    return StageResult(stage=f"extract_{system}", rows_in=total, rows_out=total, detail=counts)
