"""Source adapters (one per system) and the stage that lands their rows in ``raw_<dataset>``."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipeline import warehouse
from pipeline.datasets import Dataset, datasets_of
from pipeline.extract import changelog, changes, finance, sales, service
from pipeline.extract.base import (
    FILE_STARTS,
    FILES_READ,
    ONLY_ROWS,
    ROW_FILTER,
    FileChanged,
    FileState,
    house_frame,
)
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
    only rows added, changed or removed since the last landing are written
    (:mod:`pipeline.extract.changes`), and their record keys are left in ``raw_pending``
    for validate. To find them, a SQLite source that keeps a change log (:mod:`changelog`)
    is read only for the rows its log names (the landing is checked against the source
    afterwards), files only for the rows added at their end (and new files); anything
    else, or a check that fails, means the source is read whole and compared row by row.
    When more than ``changes.MAX_CHANGED_SHARE`` of a dataset changed (or the row hash
    itself did), the system is landed whole instead. Otherwise every dataset is landed anew
    and validate checks all of it.
    """
    if not warehouse.table_exists(ctx.engine, changes.CHANGE_LOG):
        warehouse.migrate(ctx.engine)
    if ctx.settings.sources.incremental:
        try:
            try:
                return _land(ctx, system, incremental=True)
            except (changes.LogMismatch, FileChanged) as error:
                log.warning("%s; comparing %s with its landing in full instead", error, system)
                return _land(ctx, system, incremental=True, use_log=False)
        except changes.TooManyChanges as error:
            log.warning("%s; landing %s whole instead", error, system)
    return _land(ctx, system, incremental=False)


def _log_database(ctx: StageContext, system: str) -> Path | None:
    """The SQLite file of a database source (None: files, or another database)."""
    url = {"sales": ctx.settings.sources.sales_url, "service": ctx.settings.sources.service_url}
    path = changelog.sqlite_path(url[system]) if system in url else None
    return path if path is not None and path.is_file() else None


def _files_grown(
    ctx: StageContext, dataset: Dataset, before: list[FileState]
) -> list[FileState] | None:
    """``before`` (the files a dataset was landed from) if the dataset's files now are those,
    each as large or larger, then maybe new ones, and they grew by no more than
    ``changes.MAX_CHANGED_SHARE``: they are then read from where they ended (and checked to
    begin with the same bytes as they are read). None: compare the files in full."""
    if not before:
        return None
    now = finance.files(ctx.settings, dataset)
    if [str(p.resolve()) for p in now[: len(before)]] != [f.path for f in before]:
        return None
    sizes = [p.stat().st_size for p in now[: len(before)]]
    if any(size < f.size for size, f in zip(sizes, before, strict=True)):
        return None
    added = (
        sum(sizes) - sum(f.size for f in before) + sum(p.stat().st_size for p in now[len(before) :])
    )
    if added > max(changes.MAX_CHANGED_SHARE * sum(f.size for f in before), 1 << 20):
        return None
    return before


def _land(ctx: StageContext, system: str, incremental: bool, use_log: bool = True) -> StageResult:
    adapter = ADAPTERS[system]
    datasets = {d.name: d for d in datasets_of(system)}
    counts: dict[str, int] = dict.fromkeys(datasets, 0)
    top_row: dict[str, int] = {}  # per dataset read by row id: the highest row id read
    detail: dict[str, dict[str, int]] = {}  # per compared dataset: what its landing changed
    comparing: dict[str, changes.Diff] = {}  # the dataset being compared (one at a time)
    logged: dict[str, changes.Logged] = {}  # datasets landed from the source's change log
    database = _log_database(ctx, system)
    # The comparison reads the landing before it writes: on SQLite it takes the write lock
    # first, so extracts running side by side wait for each other instead of failing.
    with ctx.engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn, conn.begin():
        was = {name: changes.log_position(conn, name) for name in datasets}
        # (a landing an earlier version wrote, with no position, is landed whole once)
        compared = {
            name
            for name in datasets
            if incremental
            and was[name] is not None
            and changes.has_change_columns(conn, f"raw_{name}")
        }
        snap = None
        if database is not None:
            try:  # read before the rows: changes made while they are read come again
                snap = changelog.snapshot(
                    database,
                    [d.raw for d in datasets.values()],
                    [datasets[n].raw for n in compared if use_log and was[n].seq is not None],
                )
            except sqlite3.Error as error:  # the read of the rows will say what is wrong
                log.info("%s: no change log read: %s", system, error)
        for name in sorted(compared) if use_log and snap is not None else ():
            table, position = datasets[name].raw, was[name]
            if (
                table in snap.tracked
                and position.source_id == snap.source_id
                and position.seq is not None
                and position.seq <= snap.seq
            ):
                row_ids = changelog.changed_rows(database, table, position.seq, snap.seq)
                if len(row_ids) > max(changes.MAX_CHANGED_SHARE * position.source_rows, 1000):
                    raise changes.TooManyChanges(
                        f"{name}: the change log names {len(row_ids):,} rows"
                    )
                logged[name] = changes.Logged(datasets[name], row_ids)
        only = {
            name: changelog.changed_rows_query(datasets[name].raw, was[name].seq, snap.seq)
            for name in logged
        }
        starts: dict[str, FileState] = {}  # files read before: read from where they ended
        files_read: dict[str, list[FileState]] = {}
        for name in sorted(compared) if use_log and system == "finance" else ():
            before = _files_grown(ctx, datasets[name], changes.landed_files(conn, name))
            if before is not None:
                starts.update((f.path, f) for f in before)
                logged[name] = changes.Logged(datasets[name], [])
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
            name: str,
            hashes: np.ndarray,
            keys: Callable[[], np.ndarray],
            row_ids: np.ndarray | None,
        ) -> tuple[np.ndarray, int]:
            first = counts[name]
            counts[name] += len(hashes)
            if row_ids is not None and len(row_ids):
                top_row[name] = max(top_row.get(name, 0), int(row_ids.max()))
            if name not in compared or name in logged:
                return np.ones(len(hashes), dtype=bool), first
            if name not in comparing:
                # adapters give a dataset's chunks one after another: the previous one is done
                finish_comparison()
                if name in detail:
                    raise RuntimeError(f"{system} adapter gave {name} again after other datasets")
                landed = changes.landed_hash_counts(conn, f"raw_{name}")
                comparing[name] = changes.Diff(datasets[name], landed)
            return comparing[name].filter(hashes, keys(), row_ids)

        tokens = [
            (ROW_FILTER, ROW_FILTER.set(row_filter)),
            (ONLY_ROWS, ONLY_ROWS.set(only)),
            (FILE_STARTS, FILE_STARTS.set(starts)),
            (FILES_READ, FILES_READ.set(files_read)),
        ]
        try:
            for name, chunk in adapter(ctx.settings, ctx.batch_id, ctx.extracted_at):
                if name in logged:
                    logged[name].offer(chunk)
                elif name in compared:
                    comparing[name].offer(chunk)
                else:
                    warehouse.insert_frame(conn, f"raw_{name}", chunk)
            finish_comparison()
            for name, landing in logged.items():
                detail[name], rows, top = landing.apply(conn, ctx.batch_id, was[name])
                if snap is None:  # rows added to files: nothing to check them against
                    changes.set_log_position(conn, name, changes.LogPosition(None, None, rows, top))
                    continue
                source = snap.shapes[datasets[name].raw]
                if (rows, top) != source:
                    raise changes.LogMismatch(
                        f"{system} table {datasets[name].raw}: after applying its change log "
                        f"the landing holds {rows:,} rows up to row id {top:,}, the source "
                        f"{source[0]:,} up to {source[1]:,}"
                    )
                changes.set_log_position(
                    conn, name, changes.LogPosition(snap.source_id, snap.seq, rows, top)
                )
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
            for name in datasets.keys() - logged.keys():  # read whole: where they stand now
                # (a table read otherwise than by row id has no row ids to follow a log by)
                tracked = snap is not None and datasets[name].raw in snap.tracked
                tracked = tracked and (name in top_row or counts[name] == 0)
                changes.set_log_position(
                    conn,
                    name,
                    changes.LogPosition(
                        snap.source_id if tracked else None,
                        snap.seq if tracked else None,
                        counts[name],
                        top_row.get(name, counts[name] - 1),
                    ),
                )
            if system == "finance":
                for name in datasets:
                    changes.set_landed_files(conn, name, files_read.get(name, []))
        finally:
            for var, token in reversed(tokens):
                var.reset(token)
    total = sum(counts.values())
    written = sum(detail[n]["inserted"] if n in detail else counts[n] for n in datasets)
    log.info("landed %s rows from %s (%s written): %s", total, system, written, counts)
    if detail:
        log.info("incremental landing of %s: %s", system, detail)
    if logged:
        log.info("%s: %s landed from the change log", system, ", ".join(sorted(logged)))
    return StageResult(
        stage=f"extract_{system}",
        rows_in=total,
        rows_out=written,
        detail={"rows": counts, "incremental": detail, "change_log": sorted(logged)},
    )
