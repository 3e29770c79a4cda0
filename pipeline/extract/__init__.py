"""Source adapters (one per system) and the stage that lands their rows in ``raw_<dataset>``."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipeline import warehouse
from pipeline.datasets import Dataset, datasets_of
from pipeline.extract import changes, finance, sales, service
from pipeline.extract.base import ROW_FILTER, house_frame
from pipeline.settings import Settings
from pipeline.stages import StageContext, StageResult
from pipeline.workers import plan_workers, run_in_worker

log = logging.getLogger(__name__)

# (settings, batch id, extraction time, only these datasets or None) -> (dataset, chunk)s
Adapter = Callable[
    [Settings, str, datetime, Collection[str] | None], Iterator[tuple[str, pd.DataFrame]]
]
ADAPTERS: dict[str, Adapter] = {
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
    workers = worker_count(ctx, system)
    if workers > 1:
        return _land_in_workers(ctx, system, workers)
    return _land(ctx, system, incremental=False)


def worker_count(ctx: StageContext, system: str) -> int:
    """Processes landing ``system``'s datasets at once: ``sources.workers`` (0 = CPU cores),
    at most one per dataset; 1 on SQLite, which takes one writer at a time."""
    if ctx.engine.dialect.name == "sqlite":
        return 1
    wanted = ctx.settings.sources.workers or os.cpu_count() or 1
    return max(1, min(wanted, len(datasets_of(system))))


def _land_in_workers(ctx: StageContext, system: str, workers: int) -> StageResult:
    """Land ``system`` whole with its datasets spread over ``workers`` processes.

    Each worker writes its datasets into new tables (``raw_<dataset>__new``) and commits;
    one transaction then puts them in place of the raw tables, so the system still lands
    all at once: a failure anywhere leaves the previous landing as it was.
    """
    names = [d.name for d in datasets_of(system)]
    new = {name: f"raw_{name}__new" for name in names}
    request = {
        "url": ctx.engine.url.render_as_string(hide_password=False),
        "settings": ctx.settings,
        "system": system,
        "batch_id": ctx.batch_id,
        "extracted_at": ctx.extracted_at,
        "tables": new,
    }
    plan = plan_workers(_expected_rows(ctx.engine, names), workers)
    counts: dict[str, int] = {}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="crm-extract-") as scratch,
            ThreadPoolExecutor(len(plan)) as pool,
        ):
            futures = [
                pool.submit(
                    run_in_worker,
                    Path(scratch),
                    "+".join(group),
                    "pipeline.extract:land_into",
                    {**request, "names": group},
                )
                for group in plan
            ]
            for future in futures:
                counts.update(future.result())
        with ctx.engine.begin() as conn:
            for name in names:
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "raw_{name}"')
                conn.exec_driver_sql(f'ALTER TABLE "{new[name]}" RENAME TO "raw_{name}"')
                changes.mark_full(conn, name, ctx.batch_id)
                changes.set_source_order(conn, name, True)
    finally:
        with ctx.engine.begin() as conn:
            for table in new.values():
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
    rows = {name: counts[name] for name in names}
    total = sum(rows.values())
    log.info("landed %s rows from %s on %d processes: %s", total, system, len(plan), rows)
    return StageResult(
        stage=f"extract_{system}",
        rows_in=total,
        rows_out=total,
        detail={"rows": rows, "incremental": {}},
    )


def _expected_rows(engine: sa.engine.Engine, names: list[str]) -> dict[str, float]:
    """Rows per dataset at the last landing (PostgreSQL's estimate). Before a first landing
    a dataset later in dependency order (order lines, payments) is taken as the larger."""
    with engine.connect() as conn:
        estimates = dict(
            conn.execute(
                sa.text(
                    "SELECT relname, reltuples FROM pg_class"
                    " WHERE relkind = 'r' AND relname = ANY(:names)"
                    " AND relnamespace = to_regnamespace(current_schema())::oid"
                ),
                {"names": [f"raw_{n}" for n in names]},
            ).all()
        )
    return {
        name: max(float(estimates.get(f"raw_{name}", 0)), 0.0) or position / len(names)
        for position, name in enumerate(names, start=1)
    }


def land_into(
    url: str,
    settings: Settings,
    system: str,
    batch_id: str,
    extracted_at: datetime,
    names: list[str],
    tables: dict[str, str],
) -> dict[str, int]:
    """Land datasets ``names`` of ``system`` whole into ``tables`` (dataset name -> table,
    replaced) in one transaction, in a worker process; rows landed per dataset."""
    engine = warehouse.create_engine(url)
    counts: dict[str, int] = dict.fromkeys(names, 0)

    def row_filter(name: str, hashes: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, int]:
        first = counts[name]  # every row, numbered in source order
        counts[name] += len(hashes)
        return np.ones(len(hashes), dtype=bool), first

    try:
        with engine.begin() as conn:
            for name in names:
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{tables[name]}"')
            token = ROW_FILTER.set(row_filter)
            try:
                for name, chunk in ADAPTERS[system](settings, batch_id, extracted_at, names):
                    warehouse.insert_frame(conn, tables[name], chunk)
            finally:
                ROW_FILTER.reset(token)
            for dataset in datasets_of(system, names):
                _land_if_missing(conn, dataset, tables[dataset.name], batch_id, extracted_at)
        return counts
    finally:
        engine.dispose()


def _land_if_missing(
    conn: sa.Connection, dataset: Dataset, table: str, batch_id: str, extracted_at: datetime
) -> None:
    """A source with no rows still lands its table (with the dataset's columns)."""
    if not sa.inspect(conn).has_table(table):
        no_rows = pd.DataFrame({raw: [] for raw in dataset.rename}, dtype=object)
        empty = house_frame(no_rows, dataset, "(no rows)", batch_id, extracted_at)
        warehouse.insert_frame(conn, table, empty)


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

        def row_filter(name: str, hashes: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, int]:
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
            return comparing[name].filter(hashes, keys)

        token = ROW_FILTER.set(row_filter)
        try:
            for name, chunk in adapter(ctx.settings, ctx.batch_id, ctx.extracted_at, None):
                if name in compared:
                    comparing[name].offer(chunk)
                else:
                    warehouse.insert_frame(conn, f"raw_{name}", chunk)
            finish_comparison()
            for name in compared - detail.keys():  # no rows at the source any more
                landed = changes.landed_hash_counts(conn, f"raw_{name}")
                detail[name] = changes.Diff(datasets[name], landed).apply(conn, ctx.batch_id)
            for name, dataset in datasets.items():
                _land_if_missing(conn, dataset, f"raw_{name}", ctx.batch_id, ctx.extracted_at)
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
