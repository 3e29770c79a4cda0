"""Source adapters (one per system) and the stage that lands their rows in ``raw_<dataset>``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipeline import warehouse
from pipeline.datasets import datasets_of
from pipeline.extract import changes, finance, sales, service
from pipeline.extract.base import ROW_FILTER, house_frame
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

    With ``sources.incremental`` a dataset already landed with row hashes is not rewritten:
    the source is still read whole, but only rows added, changed or removed since the last
    landing are written (:mod:`pipeline.extract.changes`), and their record keys are left
    in ``raw_pending`` for validate. When more than ``changes.MAX_CHANGED_SHARE`` of a
    dataset changed (or the row hash itself did), the system is landed whole instead.
    Otherwise every dataset is landed anew and validate checks all of it.
    """
    if not warehouse.table_exists(ctx.engine, changes.PENDING):
        warehouse.migrate(ctx.engine)
    if ctx.settings.sources.incremental:
        try:
            return _land(ctx, system, incremental=True)
        except changes.TooManyChanges as error:
            log.warning("%s; landing %s whole instead", error, system)
    return _land(ctx, system, incremental=False)


def _land(ctx: StageContext, system: str, incremental: bool) -> StageResult:
    adapter = ADAPTERS[system]
    datasets = {d.name: d for d in datasets_of(system)}
    counts: dict[str, int] = dict.fromkeys(datasets, 0)
    detail: dict[str, dict[str, int]] = {}  # per compared dataset: what its landing changed
    comparing: dict[str, changes.Diff] = {}  # the dataset being compared (one at a time)
    # The comparison reads the landing before it writes: on SQLite it takes the write lock
    # first, so extracts running side by side wait for each other instead of failing.
    with ctx.engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn, conn.begin():
        compared = {
            name
            for name in datasets
            if incremental and changes.has_change_columns(conn, f"raw_{name}")
        }
        for name in datasets.keys() - compared:
            # Dropped, not emptied: the new rows get a fresh table (no dead rows left
            # behind for validate to scan) whose columns are typed from this batch.
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "raw_{name}"')
            changes.mark_full(conn, name, ctx.batch_id)
            changes.set_source_order(conn, name, True)

        def finish_comparison() -> None:
            for name in list(comparing):
                detail[name] = comparing.pop(name).apply(conn, ctx.batch_id)

        def row_filter(
            name: str, hashes: np.ndarray, keys: Callable[[], np.ndarray]
        ) -> tuple[np.ndarray, int]:
            first = counts[name]
            counts[name] += len(hashes)
            if name not in compared:
                return np.ones(len(hashes), dtype=bool), first
            if name not in comparing:
                # adapters give a dataset's chunks one after another: the previous one is done
                finish_comparison()
                if name in detail:
                    raise RuntimeError(f"{system} adapter gave {name} again after other datasets")
                landed = changes.landed_hash_counts(conn, f"raw_{name}")
                comparing[name] = changes.Diff(datasets[name], landed)
            return comparing[name].filter(hashes, keys())

        token = ROW_FILTER.set(row_filter)
        try:
            for name, chunk in adapter(ctx.settings, ctx.batch_id, ctx.extracted_at):
                if name in compared:
                    comparing[name].offer(chunk)
                else:
                    warehouse.insert_frame(conn, f"raw_{name}", chunk)
            finish_comparison()
            for name in compared - detail.keys():  # no rows at the source any more
                landed = changes.landed_hash_counts(conn, f"raw_{name}")
                detail[name] = changes.Diff(datasets[name], landed).apply(conn, ctx.batch_id)
            for name, dataset in datasets.items():  # a source with no rows still lands its table
                if not sa.inspect(conn).has_table(f"raw_{name}"):
                    no_rows = pd.DataFrame({raw: [] for raw in dataset.rename}, dtype=object)
                    empty = house_frame(
                        no_rows, dataset, "(no rows)", ctx.batch_id, ctx.extracted_at
                    )
                    warehouse.insert_frame(conn, f"raw_{name}", empty)
        finally:
            ROW_FILTER.reset(token)
    total = sum(counts.values())
    written = sum(detail[n]["inserted"] if n in detail else counts[n] for n in datasets)
    log.info("landed %s rows from %s (%s written): %s", total, system, written, counts)
    if detail:
        log.info("incremental landing of %s: %s", system, detail)
    return StageResult(
        stage=f"extract_{system}",
        rows_in=total,
        rows_out=written,
        detail={"rows": counts, "incremental": detail},
    )
