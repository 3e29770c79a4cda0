"""The ``validate`` stage: type raw rows, run the suites with Great Expectations, split.

For every dataset of pipeline.datasets.DATASETS: ``raw_<dataset>`` is typed
(pipeline.transform.staging), checked against ``expectations/<dataset>.yml``, and split
into ``stg_<dataset>`` (valid rows, whole table replaced) and ``quarantine`` (partition
dataset replaced). A dataset is read, checked and written in chunks of
``sources.chunk_rows`` rows inside one transaction, so memory does not grow with the length
of history; only what the cross-row rules need is kept between chunks (keys seen, the
parents' keys, invoice dates). Rows in = valid + quarantined is asserted for every chunk.
When a dataset's quarantined share passes its threshold the run stops with
:class:`QuarantineThresholdError` and the dataset's transaction is rolled back: nothing is
written for it. Customer-file
findings go to ``dq_findings`` (partition quarter) and an HTML summary of the run, with
no personal data, to ``<out_dir>/validation/<batch_id>/index.html``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from pipeline import warehouse, worker
from pipeline.datasets import DATASETS, Dataset
from pipeline.extract import changes
from pipeline.memo import Memo
from pipeline.memory import release_freed_memory
from pipeline.quarters import Quarter
from pipeline.settings import Settings, ValidationSettings
from pipeline.stages import StageContext, StageResult
from pipeline.transform.staging import cast_column, stage_frame, text_values
from pipeline.validation.checks import SuiteRunner
from pipeline.validation.docs import write_docs
from pipeline.validation.findings import customer_findings, finding_memos
from pipeline.validation.quarantine import QUARANTINE_COLUMNS, split_rows
from pipeline.validation.rules import (
    CARRIED_VALUES,
    SUITE_DIR,
    KeyIndex,
    build_suite,
    check_frame,
    load_rules,
    orphan_rules,
    suite_parameters,
)

log = logging.getLogger(__name__)

STATE = "validation_state"  # dataset -> fingerprint of what it was validated with

__all__ = [
    "DatasetOutcome",
    "DatasetValidator",
    "QuarantineThresholdError",
    "read_raw",
    "read_raw_chunks",
    "run",
    "validate_dataset",
]


@dataclass(frozen=True)
class FindingsInput:
    """Which valid rows of a dataset can carry a customer-file finding: ``keep`` picks them
    from a chunk of valid rows, ``where`` from the staging table (SQL, None: all)."""

    keep: Callable[[pd.DataFrame], pd.DataFrame]
    where: str | None = None


# Datasets whose valid rows the customer-file findings read: the contact log only flags
# contacts without a report, so only those are kept (the log grows with history; customers
# and contacts do not).
FINDINGS_INPUTS: dict[str, FindingsInput] = {
    "sales_customers": FindingsInput(lambda valid: valid),
    "sales_contacts": FindingsInput(lambda valid: valid),
    "service_contact_log": FindingsInput(
        lambda valid: valid[valid["summary"].isna()], '"summary" IS NULL'
    ),
}


class QuarantineThresholdError(RuntimeError):
    """A dataset's quarantined share passed its threshold, or its row count collapsed."""

    def __init__(self, message: str, datasets: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.datasets = datasets

    def __reduce__(self) -> tuple:  # keeps ``datasets`` when it comes back from a worker process
        return (type(self), (str(self), self.datasets))


@dataclass
class DatasetOutcome:
    """The result of validating one dataset: counts, per-expectation summary, example keys.

    ``valid`` and ``quarantine`` hold the rows only when one frame was validated in memory
    (:func:`validate_dataset`); the stage writes its chunks as it goes and keeps counts.
    ``expectations`` has one entry per rule with ``examples``: up to five quarantined keys
    whose defects include the rule's code.
    """

    dataset: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    expectations: list[dict] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)  # first quarantined source_record_ids
    seconds: float = 0.0
    # incremental validation: the rows re-checked (the counts above are the dataset's totals)
    rows_checked: int | None = None
    valid: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    quarantine: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)

    @property
    def quarantined_share(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0


EXAMPLES = 5


class DatasetValidator:
    """Types, checks and splits one dataset chunk by chunk, keeping only cross-row state.

    Kept between chunks: the keys seen so far (duplicate rule, and later this dataset's
    key index as a parent), the parents' key indexes (references), counts, the summed
    per-expectation summary and a few example keys. GX's suite runner is built once.
    """

    def __init__(
        self,
        dataset: Dataset,
        parents: dict[str, KeyIndex],
        settings: ValidationSettings,
        source_timezone: str,
        extracted_at: datetime,
    ) -> None:
        self.dataset = dataset
        self.parents = parents
        self.source_timezone = source_timezone
        self.keys = KeyIndex(with_values=dataset.name in CARRIED_VALUES)
        self.runner = SuiteRunner(
            build_suite(dataset.name, load_rules(dataset.name)),
            suite_parameters(settings, extracted_at),
        )
        self.rows_in = self.rows_valid = self.rows_quarantined = 0
        self.summary: list[dict] = []
        self.examples: list[str] = []
        self.examples_by_code: dict[str, list[str]] = {}
        self.seconds = 0.0

    def validate(self, raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(valid typed rows, quarantine rows) of one raw chunk; chunks come in table order.

        The chunk's index numbers its rows in the dataset (unique across chunks).
        """
        started = time.perf_counter()
        typed, cast_errors = stage_frame(raw, self.dataset, self.source_timezone)
        frame = check_frame(typed, cast_errors, self.dataset, self.parents, self.keys)
        violations, summary = self.runner.run(frame)
        valid, quarantine = split_rows(self.dataset.name, raw, typed, violations, cast_errors)
        if len(valid) + len(quarantine) != len(raw):
            raise AssertionError(
                f"{self.dataset.name}: rows in {len(raw)} != valid {len(valid)} "
                f"+ quarantined {len(quarantine)}"
            )
        self.rows_in += len(raw)
        self.rows_valid += len(valid)
        self.rows_quarantined += len(quarantine)
        if not self.summary:
            self.summary = [dict(e) for e in summary]
        else:
            for total, part in zip(self.summary, summary, strict=True):
                total["unexpected_count"] += part["unexpected_count"]
                total["success"] = total["success"] and part["success"]
        if len(quarantine):
            self._keep_examples(quarantine)
        self.seconds += time.perf_counter() - started
        return valid, quarantine

    def _keep_examples(self, quarantine: pd.DataFrame) -> None:
        keys = quarantine["source_record_id"].tolist()
        self.examples.extend(keys[: EXAMPLES - len(self.examples)])
        for code in {e["code"] for e in self.summary}:
            kept = self.examples_by_code.setdefault(code, [])
            if len(kept) < EXAMPLES:
                for key, defects in zip(keys, quarantine["defects"], strict=True):
                    if code in defects.split(","):
                        kept.append(key)
                        if len(kept) == EXAMPLES:
                            break

    def outcome(self) -> DatasetOutcome:
        expectations = [
            {
                **e,
                "examples": ", ".join(str(k) for k in self.examples_by_code.get(e["code"], []))
                if e["unexpected_count"]
                else "",
            }
            for e in self.summary
        ]
        return DatasetOutcome(
            dataset=self.dataset.name,
            rows_in=self.rows_in,
            rows_valid=self.rows_valid,
            rows_quarantined=self.rows_quarantined,
            expectations=expectations,
            examples=list(self.examples),
            seconds=self.seconds,
        )


def _raw_select(
    engine: sa.engine.Engine,
    dataset: str,
    columns: list[str] | None = None,
    changed: bool = False,
    referenced_by: tuple[str, str] | None = None,
    ordered: bool = True,
) -> sa.TextClause:
    table = f"raw_{dataset}"
    if not warehouse.table_exists(engine, table):
        raise LookupError(
            f"warehouse table {table!r} does not exist yet: run the extract stage first"
        )
    names = ", ".join(f'"{c}"' for c in columns) if columns else "*"
    sql = f'SELECT {names} FROM "{table}"'
    if changed and engine.dialect.name == "postgresql":
        # The keys written into the query, which the server hashes: one process scans the
        # landing, where IN (SELECT ... raw_pending) was a parallel hash join (three
        # processes, more of the two cores the workers share, for about the same time)
        sql += f" WHERE COALESCE(\"source_record_id\", '') {_pending_literal(engine, dataset)}"
    elif changed:  # the rows of the records pending for this dataset
        sql += f" WHERE COALESCE(\"source_record_id\", '') IN {changes.pending_keys_sql(dataset)}"
    elif referenced_by:  # the rows a child's pending records refer to
        child, column = referenced_by
        sql += (
            f' WHERE "source_record_id" IN (SELECT c."{column}" FROM "raw_{child}" c '
            f"WHERE COALESCE(c.\"source_record_id\", '') IN {changes.pending_keys_sql(child)})"
        )
    # Source order: the first copy of a key is the valid one and carries its value. A table
    # landed whole is in source order; one an incremental extract changed may not be.
    with engine.connect() as conn:
        if (
            ordered
            and changes.has_change_columns(conn, table)
            and (changed or not changes.in_source_order(conn, dataset))
        ):
            sql += ' ORDER BY "source_row"'
    return sa.text(sql)


def _pending_literal(engine: sa.engine.Engine, dataset: str) -> str:
    """``= ANY(<the keys pending for dataset, as a literal text array>)`` (PostgreSQL)."""
    with engine.connect() as conn:
        keys = changes.pending_keys(conn, dataset)
        if not keys:  # a condition the planner sees is false, not a scan comparing with nothing
            return "IS NULL AND false"
        among, listed = warehouse.one_of("postgresql", "%(keys)s", keys)
        return warehouse.inline_parameters(conn, among, {"keys": listed})


def read_raw_chunks(
    engine: sa.engine.Engine,
    dataset: str,
    chunk_rows: int,
    columns: list[str] | None = None,
    changed: bool = False,
    referenced_by: tuple[str, str] | None = None,
    ordered: bool = True,
) -> Iterator[pd.DataFrame]:
    """``raw_<dataset>`` in table order, ``chunk_rows`` rows at a time, streamed
    (:func:`warehouse.stream_rows`).

    Values exactly as landed (object dtype, text not parsed); each chunk's index numbers
    its rows in the table. An empty table gives one empty chunk with the table's columns.
    ``columns`` reads only those columns. ``changed``: only the rows of the records pending
    in ``raw_pending``. ``referenced_by`` (child dataset, reference column): only the rows
    whose key the child's pending records refer to. Rows come in source order unless
    ``ordered`` is False. The change-capture columns are left out.
    """
    select = _raw_select(engine, dataset, columns, changed, referenced_by, ordered)
    names, blocks = warehouse.stream_rows(
        engine, select.text, chunk_rows, leave_out=changes.CHANGE_COLUMNS
    )
    start = 0
    try:
        for block in blocks:
            index = pd.RangeIndex(start, start + len(block))
            yield pd.DataFrame(block, index=index, columns=names, dtype=object, copy=False)
            start += len(block)
    finally:
        blocks.close()
    if not start:
        yield pd.DataFrame({name: [] for name in names}, dtype=object)


def read_raw(engine: sa.engine.Engine, dataset: str) -> pd.DataFrame:
    """``raw_<dataset>`` exactly as landed (text values, not parsed), with a RangeIndex."""
    return pd.concat(list(read_raw_chunks(engine, dataset, 200_000)))


def _raw_rows_of(
    engine: sa.engine.Engine, dataset: str, columns: list[str], keys: list[str], ordered: bool
) -> pd.DataFrame:
    """The rows of ``raw_<dataset>`` whose key is one of ``keys`` (``columns`` only, values
    as landed), in source order when ``ordered``."""
    if not keys:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    _raw_select(engine, dataset)  # a clear error when the table is missing
    among, listed = warehouse.one_of(engine.dialect.name, "%(keys)s", keys)
    names = ", ".join(f'"{c}"' for c in columns)
    sql = f'SELECT {names} FROM "raw_{dataset}" WHERE "source_record_id" {among}'
    with engine.connect() as conn:
        # A scan with a filter may be split over parallel workers: only ORDER BY keeps order.
        if ordered and changes.has_change_columns(conn, f"raw_{dataset}"):
            sql += ' ORDER BY "source_row"'
    frame = warehouse.read_query(engine, sql, {"keys": listed})
    return frame[columns].astype(object)


def raw_key_index(
    engine: sa.engine.Engine,
    dataset: Dataset,
    chunk_rows: int,
    source_timezone: str,
    referenced_by: tuple[str, str] | None = None,
    keys: list[str] | None = None,
) -> KeyIndex:
    """The key index validating ``dataset`` would build (every raw row's key, and the
    carried value of its first row), read from ``raw_<dataset>`` without validating it.

    This is what lets a child dataset be validated while its parent is, in another process.
    With ``referenced_by`` (child, column) only the keys the child's pending records refer
    to: all that re-checking those records looks up. With ``keys``, only those keys.
    """
    carried = CARRIED_VALUES.get(dataset.name)
    column = next((c for c in dataset.columns if c.name == carried), None)
    index = KeyIndex(with_values=carried is not None)
    columns = ["source_record_id"] + ([carried] if carried else [])
    # Which copy of a key comes first only matters for its carried value.
    chunks = (
        read_raw_chunks(
            engine,
            dataset.name,
            chunk_rows,
            columns,
            referenced_by=referenced_by,
            ordered=carried is not None,
        )
        if keys is None
        else [_raw_rows_of(engine, dataset.name, columns, keys, ordered=carried is not None)]
    )
    for raw in chunks:
        values = None
        if column is not None:
            text = text_values(raw[column.name])
            values = cast_column(text, column.kind, column.vocab, source_timezone)[0]
        index.add(text_values(raw["source_record_id"]), values)
    return index


def parent_key_indexes(
    engine: sa.engine.Engine,
    dataset: Dataset,
    settings: Settings,
    pending: changes.Pending | None,
    known: dict[str, KeyIndex],
    rows: list[pd.DataFrame] | None = None,
) -> dict[str, KeyIndex]:
    """The key indexes of ``dataset``'s parents, read from their raw tables: whole (kept in
    ``known`` for the next child) when the dataset is validated whole, else only the keys
    its pending records refer to (taken from their raw ``rows`` when given, which spares
    reading the dataset's raw table again)."""
    indexes = {}
    for column, parent in dataset.parents.items():
        if pending is not None and not pending.full:
            referred = None
            if rows is not None:
                referred = sorted({str(v) for raw in rows for v in raw[column].dropna()})
            indexes[parent] = raw_key_index(
                engine,
                DATASETS[parent],
                settings.sources.chunk_rows,
                settings.sources.source_timezone,
                referenced_by=(dataset.name, column),
                keys=referred,
            )
            continue
        if parent not in known:
            known[parent] = raw_key_index(
                engine,
                DATASETS[parent],
                settings.sources.chunk_rows,
                settings.sources.source_timezone,
            )
        indexes[parent] = known[parent]
    return indexes


def pending_rows(
    engine: sa.engine.Engine, dataset: Dataset, settings: Settings, pending: changes.Pending
) -> list[pd.DataFrame] | None:
    """The raw rows of the records pending for ``dataset``, read once for both the parent
    keys they refer to and their checks: when it has parents and is re-checked in part,
    on few enough records to hold (two chunks' worth); else None."""
    chunk_rows = settings.sources.chunk_rows
    if pending.full or not dataset.parents or len(pending.keys) > 2 * chunk_rows:
        return None
    return list(read_raw_chunks(engine, dataset.name, chunk_rows, changed=True))


def parent_keys(dataset: str, typed: pd.DataFrame) -> KeyIndex:
    """The key index of a parent dataset's typed rows (with its carried values, if any)."""
    carried = CARRIED_VALUES.get(dataset)
    return KeyIndex.of(typed["source_record_id"], typed[carried] if carried else None)


def validate_dataset(
    dataset: Dataset,
    raw: pd.DataFrame,
    parents: dict[str, pd.DataFrame],
    settings: ValidationSettings,
    source_timezone: str,
    extracted_at: datetime,
) -> DatasetOutcome:
    """Type, check and split one raw frame in memory (pure apart from GX's in-memory context).

    ``parents`` maps each parent dataset of ``dataset`` to its typed frame (all raw rows);
    references are checked against the parents' raw keys.
    """
    validator = DatasetValidator(
        dataset,
        {name: parent_keys(name, frame) for name, frame in parents.items()},
        settings,
        source_timezone,
        extracted_at,
    )
    valid, quarantine = validator.validate(raw.reset_index(drop=True))
    outcome = validator.outcome()
    outcome.valid, outcome.quarantine = valid, quarantine
    return outcome


def threshold_error(outcome: DatasetOutcome, max_share: float) -> QuarantineThresholdError:
    failing = [e for e in outcome.expectations if e["unexpected_count"]]
    rules = ", ".join(
        f"{e['rule_id']} ({e['expectation']}): {e['unexpected_count']} rows" for e in failing
    )
    examples = ", ".join(str(v) for v in outcome.examples)
    return QuarantineThresholdError(
        f"dataset {outcome.dataset}: {outcome.rows_quarantined} of {outcome.rows_in} rows "
        f"({outcome.quarantined_share:.1%}) failed validation, above the threshold {max_share:.1%}; "
        f"failing expectations: {rules}; example source_record_id: {examples}. "
        f"Nothing was written for {outcome.dataset}.",
        (outcome.dataset,),
    )


def previous_counts(engine: sa.engine.Engine, dataset: Dataset) -> tuple[int, int] | None:
    """(staged, quarantined) rows of the previous batch of ``dataset``, None on the first run."""
    with engine.connect() as conn:
        return _staged_counts(conn, dataset)


def _check_counts(
    outcome: DatasetOutcome, settings: ValidationSettings, previous: int | None
) -> QuarantineThresholdError | None:
    max_share = settings.max_quarantine_share.get(
        outcome.dataset, settings.default_max_quarantine_share
    )
    if outcome.quarantined_share > max_share:
        return threshold_error(outcome, max_share)
    if previous and outcome.rows_in < settings.min_row_count_ratio * previous:
        return QuarantineThresholdError(
            f"dataset {outcome.dataset}: row count collapsed from {previous} in the previous batch "
            f"to {outcome.rows_in} (below {settings.min_row_count_ratio:.0%}); nothing was written "
            f"for {outcome.dataset}.",
            (outcome.dataset,),
        )
    return None


# The indexes of a table (not those behind constraints), as the statements that create them
TABLE_INDEXES = """
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i
WHERE i.indrelid = CAST(:table AS regclass)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
"""


def _clear(conn: sa.Connection, dataset: Dataset) -> list[str]:
    """Empty stg_<dataset> and the dataset's quarantine partition (inside the caller's
    transaction). Returns what :func:`_rebuild_indexes` runs once the rows are in.

    On PostgreSQL the staging table is truncated, which leaves no dead rows behind (a
    DELETE left the whole previous table in it until a vacuum), and its indexes are dropped:
    building one over the loaded rows costs less than keeping it up to date row by row
    (order lines at 100,000 customers: 11.7 s against 16.6 s)."""
    inspector = sa.inspect(conn)
    table = dataset.staging_table
    rebuild: list[str] = []
    if inspector.has_table(table):
        if conn.dialect.name == "postgresql":
            found = conn.execute(sa.text(TABLE_INDEXES), {"table": f'"{table}"'}).all()
            for name, definition in found:
                conn.exec_driver_sql(f"DROP INDEX {name}")  # regclass text: quoted as needed
                rebuild.append(definition)
            conn.exec_driver_sql(f'TRUNCATE "{table}"')
        else:
            conn.exec_driver_sql(f'DELETE FROM "{table}"')
    if inspector.has_table("quarantine"):
        conn.execute(sa.text('DELETE FROM "quarantine" WHERE "dataset" = :d'), {"d": dataset.name})
    return rebuild


def _rebuild_indexes(conn: sa.Connection, definitions: list[str]) -> None:
    """Create the indexes :func:`_clear` dropped (in the same transaction)."""
    if definitions:
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")  # sorted in memory
    for definition in definitions:
        conn.exec_driver_sql(definition)


def _clear_pending_records(
    conn: sa.Connection, dataset: Dataset, keys: frozenset[str]
) -> tuple[int, int]:
    """Delete the staged and quarantined rows of the records pending for ``dataset``
    (``keys``); return how many of each went."""
    table = dataset.staging_table
    record = "COALESCE(\"source_record_id\", '')"  # as ix_quarantine_dataset_record has it
    if conn.dialect.name == "postgresql":
        # An array of the keys takes the index on source_record_id (100,000 keys out of 9.2
        # million staged order lines: 0.4 s); IN (subquery) was planned as a hash join over
        # the whole table (5.6 s). The array goes as a value, which the server hashes: an
        # ARRAY(subquery) is searched from end to end for each row a bitmap scan rechecks,
        # and once the bitmap outgrew work_mem that took 10 minutes. A hundredth of the rows,
        # scattered, the planner costs as a sequential scan (random_page_cost): 1.5 s alone,
        # 3.4 s beside the other worker, against 0.4 s through the index; so not that.
        values = {"d": dataset.name, "keys": sorted(keys)}
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        staged = conn.exec_driver_sql(
            f'DELETE FROM "{table}" WHERE "source_record_id" = ANY(%(keys)s)', values
        ).rowcount
        quarantined = conn.exec_driver_sql(
            f'DELETE FROM "quarantine" WHERE "dataset" = %(d)s AND {record} = ANY(%(keys)s)',
            values,
        ).rowcount
        conn.exec_driver_sql("SET LOCAL enable_seqscan = on")
        return int(staged), int(quarantined)
    pending = changes.pending_keys_sql(dataset.name)
    staged = conn.exec_driver_sql(f'DELETE FROM "{table}" WHERE "source_record_id" IN {pending}')
    quarantined = conn.execute(
        sa.text(f'DELETE FROM "quarantine" WHERE "dataset" = :d AND {record} IN {pending}'),
        {"d": dataset.name},
    )
    return int(staged.rowcount), int(quarantined.rowcount)


def _staged_counts(conn: sa.Connection, dataset: Dataset) -> tuple[int, int] | None:
    """(staged rows, quarantined rows) of ``dataset`` as ``conn`` sees them; None before
    its first validation. Kept in ``validation_state`` by each validate (counting a
    staged table of 9 million rows took 2 s); counted where it is not."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(dataset.staging_table):
        return None
    if inspector.has_table(STATE) and "staged_rows" in {
        c["name"] for c in inspector.get_columns(STATE)
    }:
        kept = conn.execute(
            sa.text(
                f'SELECT "staged_rows", "quarantined_rows" FROM "{STATE}" WHERE "dataset" = :d'
            ),
            {"d": dataset.name},
        ).first()
        if kept is not None and kept[0] is not None and kept[1] is not None:
            return int(kept[0]), int(kept[1])
    staged = conn.execute(sa.text(f'SELECT COUNT(*) FROM "{dataset.staging_table}"')).scalar_one()
    quarantined = (
        conn.execute(
            sa.text('SELECT COUNT(*) FROM "quarantine" WHERE "dataset" = :d'), {"d": dataset.name}
        ).scalar_one()
        if inspector.has_table("quarantine")
        else 0
    )
    return int(staged), int(quarantined)


_RULE_CODE = (
    "transform/staging.py",
    "validation/rules.py",
    "validation/checks.py",
    "validation/quarantine.py",
    "datasets.py",
)


def fingerprint(dataset: Dataset, settings: Settings) -> str:
    """What a staged dataset was validated with: its suite, the validation settings, the
    source time zone and the code that types and checks rows. Another fingerprint means
    the staged rows may no longer be what validation would make of them."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    digest.update((SUITE_DIR / f"{dataset.name}.yml").read_bytes())
    # thresholds and workers decide whether a run passes, not what a row becomes
    ignored = {
        "workers",
        "max_quarantine_share",
        "default_max_quarantine_share",
        "min_row_count_ratio",
    }
    digest.update(settings.validation.model_dump_json(exclude=ignored).encode())
    digest.update(settings.sources.source_timezone.encode())
    for name in _RULE_CODE:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()


def plan_pending(ctx: StageContext) -> dict[str, changes.Pending]:
    """What validate must redo per dataset: all of it, or the records the extracts changed.

    A dataset is checked whole when its extract landed it whole, when it has no staging
    table yet, or when its fingerprint changed; a child record whose parent record changed
    is re-checked too (:func:`pipeline.extract.changes.propagate`). Committed before any
    dataset is validated, so a dataset that fails keeps its pending records for the next run.
    """
    engine = ctx.engine
    if not warehouse.table_exists(engine, changes.PENDING):
        return {name: changes.Pending(full=True) for name in DATASETS}
    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        stored = dict(
            conn.execute(sa.text(f'SELECT "dataset", "fingerprint" FROM "{STATE}"')).fetchall()
        )
        for name, dataset in DATASETS.items():
            if not inspector.has_table(dataset.staging_table) or stored.get(name) != fingerprint(
                dataset, ctx.settings
            ):
                changes.mark_full(conn, name, ctx.batch_id)
        orphans = {
            (name, column): code
            for name, dataset in DATASETS.items()
            for column, code in orphan_rules(dataset).items()
        }
        changes.propagate(conn, ctx.batch_id, orphans)
        return {name: changes.pending(conn, name) for name in DATASETS}


def _store_state(
    conn: sa.Connection, ctx: StageContext, dataset: Dataset, counts: tuple[int, int]
) -> None:
    """What ``dataset`` was validated with, and its staged and quarantined rows now."""
    if not sa.inspect(conn).has_table(STATE):
        return
    conn.execute(sa.text(f'DELETE FROM "{STATE}" WHERE "dataset" = :d'), {"d": dataset.name})
    conn.execute(
        sa.text(
            f'INSERT INTO "{STATE}" ("dataset", "fingerprint", "batch_id", "staged_rows", '
            '"quarantined_rows") VALUES (:d, :f, :b, :s, :q)'
        ),
        {
            "d": dataset.name,
            "f": fingerprint(dataset, ctx.settings),
            "b": ctx.batch_id,
            "s": counts[0],
            "q": counts[1],
        },
    )


def validate_and_write(
    ctx: StageContext,
    dataset: Dataset,
    parents: dict[str, KeyIndex],
    keep: FindingsInput | None = None,
    pending: changes.Pending | None = None,
    rows: list[pd.DataFrame] | None = None,
) -> tuple[DatasetOutcome, KeyIndex, QuarantineThresholdError | None, pd.DataFrame | None]:
    """Validate ``raw_<dataset>`` chunk by chunk, writing each chunk's rows as it goes.

    stg_<dataset> and the dataset's quarantine partition are replaced in one transaction,
    rolled back when the dataset fails its quarantine threshold or row-count check, so
    nothing is written for it then. Returns (outcome, the dataset's key index, the error
    if any, the valid rows ``keep`` selected from the chunks, None without ``keep`` and
    after a partial run, whose caller reads them staged: :func:`staged_findings_input`).

    With ``pending`` naming record keys (not the whole dataset), only the raw rows of those
    records are checked and they replace those records' staged and quarantined rows; the
    thresholds are judged on the dataset's totals afterwards, as a full run would. The
    index returned then holds only those records' keys. ``rows``: those records' raw rows,
    already read (:func:`pending_rows`).
    """
    settings = ctx.settings.validation
    before = previous_counts(ctx.engine, dataset)
    previous = None if before is None else sum(before)
    incremental = pending is not None and not pending.full
    validator = DatasetValidator(
        dataset, parents, settings, ctx.settings.sources.source_timezone, ctx.extracted_at
    )
    kept: list[pd.DataFrame] = []
    with ctx.engine.connect() as conn:
        transaction = conn.begin()
        try:
            rebuild: list[str] = []
            gone = (0, 0)
            if incremental:
                assert pending is not None
                gone = _clear_pending_records(conn, dataset, pending.keys)
            else:
                rebuild = _clear(conn, dataset)
            chunks = (
                rows
                if rows is not None and incremental
                else read_raw_chunks(
                    ctx.engine, dataset.name, ctx.settings.sources.chunk_rows, changed=incremental
                )
            )
            for raw in chunks:
                valid, quarantine = validator.validate(raw)
                warehouse.insert_frame(conn, dataset.staging_table, valid)
                partition = quarantine.drop(columns=["dataset"]).assign(dataset=dataset.name)
                warehouse.insert_frame(conn, "quarantine", partition)
                if keep is not None and not incremental:
                    kept.append(keep.keep(valid))
            _rebuild_indexes(conn, rebuild)
            outcome = validator.outcome()
            if incremental:  # the dataset's totals: what was there, less what went, plus
                staged = (before or (0, 0))[0] - gone[0] + outcome.rows_valid
                quarantined = (before or (0, 0))[1] - gone[1] + outcome.rows_quarantined
                outcome.rows_checked = outcome.rows_in
                outcome.rows_in = staged + quarantined
                outcome.rows_valid, outcome.rows_quarantined = staged, quarantined
            error = _check_counts(outcome, settings, previous)
            if pending is not None:
                changes.clear_pending(conn, dataset.name, pending.batches)
            _store_state(conn, ctx, dataset, (outcome.rows_valid, outcome.rows_quarantined))
        except BaseException:
            transaction.rollback()
            raise
        if error is None:
            transaction.commit()
        else:
            transaction.rollback()
    return outcome, validator.keys, error, (pd.concat(kept, ignore_index=True) if kept else None)


def staged_findings_input(engine: sa.engine.Engine, name: str) -> pd.DataFrame:
    """The rows of dataset ``name`` the customer-file findings read (``FINDINGS_INPUTS``),
    from its staging table: after a partial validation, every staged row counts, not only
    the records re-checked."""
    keep = FINDINGS_INPUTS[name]
    return keep.keep(warehouse.read_table(engine, DATASETS[name].staging_table, where=keep.where))


def worker_count(ctx: StageContext) -> int:
    """Processes validating datasets at once: ``validation.workers`` (0 = CPU cores), 1 on SQLite."""
    if ctx.engine.dialect.name == "sqlite":
        return 1
    wanted = ctx.settings.validation.workers or os.cpu_count() or 1
    return max(1, min(wanted, len(DATASETS)))


# What validating one dataset hands to the rest of the stage
Validated = tuple[DatasetOutcome, QuarantineThresholdError | None, pd.DataFrame | None]


def validate_in_worker(
    url: str,
    settings: Settings,
    quarter: Quarter,
    batch_id: str,
    extracted_at: datetime,
    names: list[str],
    pending: dict[str, changes.Pending] | None = None,
) -> dict[str, Validated]:
    """Datasets ``names`` in turn, in a worker process: parents' key indexes come from their
    raw tables (each read once per worker)."""
    engine = warehouse.create_engine(url)
    parent_indexes: dict[str, KeyIndex] = {}
    results: dict[str, Validated] = {}
    try:
        ctx = StageContext(settings, engine, quarter, batch_id, extracted_at)
        for name in names:
            started = time.perf_counter()
            dataset = DATASETS[name]
            mine = (pending or {}).get(name)
            rows = None if mine is None else pending_rows(engine, dataset, settings, mine)
            parents = parent_key_indexes(engine, dataset, settings, mine, parent_indexes, rows)
            read = time.perf_counter() - started
            outcome, _keys, error, kept = validate_and_write(
                ctx, dataset, parents, FINDINGS_INPUTS.get(name), mine, rows
            )
            results[name] = (outcome, error, kept)
            log.info(
                "worker: %s done in %.1f s (%.1f s reading its rows and its parents' keys, "
                "%.1f s checking)",
                name,
                time.perf_counter() - started,
                read,
                outcome.seconds,
            )
            # The next dataset's chunks start from what this one freed: without this the
            # worker's peak grew with the rows it had already validated.
            del parents, outcome, kept, rows
            release_freed_memory()
        return results
    finally:
        engine.dispose()


def _raw_rows(engine: sa.engine.Engine, dataset: str) -> int:
    _raw_select(engine, dataset)  # a clear error when the table is missing
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f'SELECT COUNT(*) FROM "raw_{dataset}"')).scalar_one())


# A record's quarantined rows, found by dataset and key (blank keys as ''): what a day's
# changes delete, and where the records referring to a key that appeared are looked for.
QUARANTINE_INDEX = (
    'CREATE INDEX IF NOT EXISTS "ix_quarantine_dataset_record" ON "quarantine" '
    '("dataset", COALESCE("source_record_id", \'\'))'
)


def _create_quarantine_table(engine: sa.engine.Engine) -> None:
    """Every worker writes to ``quarantine``; it is created here first so that they do not
    race to create it (as the stage in one process would create it: ``dataset`` last),
    with its index (added to a table an earlier version created)."""
    with engine.begin() as conn:
        if not sa.inspect(conn).has_table("quarantine"):
            columns = [c for c in QUARANTINE_COLUMNS if c != "dataset"] + ["dataset"]
            empty = pd.DataFrame(
                {
                    c: pd.Series(dtype="datetime64[ns]" if c == "extracted_at" else object)
                    for c in columns
                }
            )
            warehouse.insert_frame(conn, "quarantine", empty)
        conn.exec_driver_sql(QUARANTINE_INDEX)


# What a validate worker imports while the stage plans (great_expectations: 6 s on EPYC)
WORKER_PRELOAD = ("pipeline.validation", "great_expectations")


def _run_calls(process: worker.Started, requests: list[dict]) -> Iterator[dict[str, Validated]]:
    """:func:`validate_in_worker` on each request's ``names`` in turn, in a worker process
    (:class:`pipeline.worker.Started`), handed over at once: each call's results by dataset
    as it comes back while the process goes on, or the error of the first that failed."""
    work = [("+".join(request["names"]), request) for request in requests]
    return process.calls("pipeline.validation:validate_in_worker", work)


# What a dataset costs a worker besides its rows, in rows: clearing, setting up its checks,
# writing its state (about 0.4 s; a row re-checked costs about 25 us).
DATASET_COST_ROWS = 16_000
# A partial dataset's reads scan its raw table (and its parents'): per row landed, about a
# hundredth of what a row checked costs.
SCAN_COST_SHARE = 0.01
# The customer-file findings, which the stage works out once their three datasets are in
# (about 1.5 s at 100,000 customers, whole or partial run), in rows checked.
FINDINGS_COST_ROWS = 60_000


def plan_workers(
    sizes: dict[str, int], workers: int, together: tuple[str, ...] = (), after: int = 0
) -> list[list[str]]:
    """Datasets spread over at most ``workers`` processes: largest first, each to the
    process with the least work so far (each process pays its imports once). ``sizes``:
    each dataset's work in rows (:func:`work_rows`), to which each dataset adds
    :data:`DATASET_COST_ROWS`. ``together``: datasets given to one process, whose results
    the stage then works on for ``after`` rows' worth while the others go on (the
    customer-file findings): they count as one piece of work that much larger."""
    pieces = [[n] for n in sizes if n not in together]
    grouped = [n for n in together if n in sizes]
    if grouped:
        pieces.append(grouped)

    def cost(piece: list[str]) -> int:
        extra = after if piece is grouped else 0
        return sum(sizes[n] + DATASET_COST_ROWS for n in piece) + extra

    loads = [0] * workers
    plan: list[list[str]] = [[] for _ in range(workers)]
    for piece in sorted(pieces, key=lambda p: (-cost(p), p)):
        least = loads.index(min(loads))
        plan[least] += sorted(piece, key=lambda n: (-sizes[n], n))
        loads[least] += cost(piece)
    return [names for names in plan if names]


def work_rows(engine: sa.engine.Engine, dataset: Dataset, pending: changes.Pending) -> int:
    """What validating ``dataset`` costs, in rows checked: its raw rows when it is checked
    whole; else its pending records plus a share of the raw table its reads scan."""
    if pending.full:
        return _raw_rows(engine, dataset.name)
    landed = previous_counts(engine, dataset)
    return len(pending.keys) + int(SCAN_COST_SHARE * sum(landed or (0, 0)))


def _validate_parallel(
    ctx: StageContext, processes: list[worker.Started], pending: dict[str, changes.Pending]
) -> Iterator[tuple[Dataset, Validated]]:
    """The datasets on the worker ``processes`` (:func:`plan_workers`); results as the
    workers hand them back. Each dataset is written in its own transaction, as in one
    process. The customer-file findings' datasets are one call of their process, so their
    results come back (and the findings start) while the process goes on with the rest."""
    sizes = {
        name: work_rows(ctx.engine, dataset, pending[name]) for name, dataset in DATASETS.items()
    }
    common = {
        "url": ctx.engine.url.render_as_string(hide_password=False),
        "settings": ctx.settings,
        "quarter": ctx.quarter,
        "batch_id": ctx.batch_id,
        "extracted_at": ctx.extracted_at,
        "pending": pending,
    }
    plan = plan_workers(sizes, len(processes), tuple(FINDINGS_INPUTS), FINDINGS_COST_ROWS)
    for process in processes[len(plan) :]:
        process.close()
    calls = [_calls(names, tuple(FINDINGS_INPUTS)) for names in plan]
    done: queue.SimpleQueue = queue.SimpleQueue()
    failed = threading.Event()  # no further results once one failed

    def work(process: worker.Started, groups: list[list[str]]) -> None:
        results = _run_calls(process, [{**common, "names": names} for names in groups])
        for names in groups:
            if failed.is_set():
                return
            try:
                done.put((names, next(results), None))
            except BaseException as error:
                done.put((names, None, error))
                return

    with ThreadPoolExecutor(len(plan)) as pool:
        for process, groups in zip(processes, calls, strict=False):
            pool.submit(work, process, groups)
        try:
            for _ in range(sum(len(groups) for groups in calls)):
                names, results, error = done.get()
                if error is not None:
                    raise error
                for name in names:
                    yield DATASETS[name], results[name]
        finally:  # the stage failed, or stopped reading: the workers' calls in hand end it
            failed.set()


def _calls(names: list[str], together: tuple[str, ...]) -> list[list[str]]:
    """A worker's datasets as the calls it is given: those ``together`` first, then the rest."""
    first = [n for n in names if n in together]
    rest = [n for n in names if n not in together]
    return [group for group in (first, rest) if group]


def _validate_sequential(
    ctx: StageContext, pending: dict[str, changes.Pending]
) -> Iterator[tuple[Dataset, Validated]]:
    """Every dataset in DATASETS order in this process, the key indexes of parents validated
    whole kept in memory (others read from the raw tables, :func:`parent_key_indexes`)."""
    still_parent = {
        name: max(i for i, d in enumerate(DATASETS.values()) if name in d.parents.values())
        for name in {p for d in DATASETS.values() for p in d.parents.values()}
    }
    key_indexes: dict[str, KeyIndex] = {}
    for position, dataset in enumerate(DATASETS.values()):
        # parents come before children in DATASETS
        mine = pending[dataset.name]
        rows = pending_rows(ctx.engine, dataset, ctx.settings, mine)
        parents = parent_key_indexes(ctx.engine, dataset, ctx.settings, mine, key_indexes, rows)
        outcome, keys, error, kept = validate_and_write(
            ctx, dataset, parents, FINDINGS_INPUTS.get(dataset.name), mine, rows
        )
        del rows
        if dataset.name in still_parent and pending[dataset.name].full:
            key_indexes[dataset.name] = keys
        for name in [n for n in key_indexes if still_parent[n] <= position]:
            del key_indexes[name]  # no later dataset refers to it
        yield dataset, (outcome, error, kept)


def run(ctx: StageContext) -> StageResult:
    """Validate every dataset; write stg_*, quarantine, dq_findings and the HTML summary.

    Each dataset is read, checked and written in chunks of ``sources.chunk_rows`` rows, so
    memory holds one chunk plus the key indexes of the datasets still needed as parents.
    On PostgreSQL the datasets are validated on ``worker_count`` processes at once; the
    result is the same as in one process.
    """
    workers = worker_count(ctx)
    with tempfile.TemporaryDirectory(prefix="crm-validate-") as scratch:
        # The worker processes start first: their imports overlap the planning.
        processes = [
            worker.Started(Path(scratch), f"worker-{i}", WORKER_PRELOAD)
            for i in range(workers if workers > 1 else 0)
        ]
        try:
            return _run(ctx, processes)
        finally:
            for process in processes:  # those not given work (planning failed, fewer groups)
                process.close()


def _customer_findings(
    ctx: StageContext,
    inputs: dict[str, pd.DataFrame | None],
    phones: Memo[bool],
    usccs: Memo[bool],
) -> pd.DataFrame:
    """:func:`customer_findings` on ``inputs`` (by dataset; None: read it staged)."""
    frames = {
        name: staged_findings_input(ctx.engine, name) if frame is None else frame
        for name, frame in inputs.items()
    }
    settings = ctx.settings.validation
    return customer_findings(
        frames["sales_customers"],
        frames["sales_contacts"],
        frames["service_contact_log"],
        quarter=str(ctx.quarter),
        as_of=ctx.extracted_at,
        stale_after_days=settings.stale_after_days,
        phone_region=settings.phone_region,
        phones=phones,
        usccs=usccs,
    )


def _run(ctx: StageContext, processes: list[worker.Started]) -> StageResult:
    settings = ctx.settings.validation
    findings_inputs: dict[str, pd.DataFrame] = {}
    outcomes: dict[str, DatasetOutcome] = {}
    errors: list[QuarantineThresholdError] = []
    _create_quarantine_table(ctx.engine)
    pending = plan_pending(ctx)
    results = (
        _validate_parallel(ctx, processes, pending)
        if processes
        else _validate_sequential(ctx, pending)
    )
    # The customer-file findings start as soon as their three datasets are validated, in a
    # thread of this process (which otherwise only waits for the workers): phone parsing
    # then overlaps the validation of the other datasets.
    finding: Future | None = None
    with ThreadPoolExecutor(1) as findings_pool:
        # Worker processes validate: the remembered checks are read meanwhile (in one
        # process, as on SQLite, not beside its writes).
        memos = (
            findings_pool.submit(finding_memos, ctx.engine, settings.phone_region)
            if processes
            else None
        )
        for dataset, (outcome, error, kept) in results:
            if dataset.name in FINDINGS_INPUTS:  # None: partly re-checked, read it staged
                findings_inputs[dataset.name] = kept
            log.info(
                "validated %s%s: %s rows in, %s valid, %s quarantined (%.2f%%) in %.1fs",
                dataset.name,
                ""
                if outcome.rows_checked is None
                else f" ({outcome.rows_checked} rows re-checked)",
                outcome.rows_in,
                outcome.rows_valid,
                outcome.rows_quarantined,
                100 * outcome.quarantined_share,
                outcome.seconds,
            )
            if error is not None:
                log.error("%s", error)
                errors.append(error)
            outcomes[dataset.name] = outcome
            blocked = {name for e in errors for name in e.datasets}
            if (
                finding is None
                and findings_inputs.keys() >= FINDINGS_INPUTS.keys()
                and not blocked & set(FINDINGS_INPUTS)
            ):
                phones, usccs = (
                    memos.result() if memos else finding_memos(ctx.engine, settings.phone_region)
                )
                if not processes:  # in this thread: an in-memory warehouse is only its own
                    for name in [n for n, frame in findings_inputs.items() if frame is None]:
                        findings_inputs[name] = staged_findings_input(ctx.engine, name)
                finding = findings_pool.submit(
                    _customer_findings, ctx, dict(findings_inputs), phones, usccs
                )
        findings = pd.DataFrame() if finding is None else finding.result()
    order = list(DATASETS)  # the workers finish in any order; reports list datasets in this
    outcomes = {name: outcomes[name] for name in order if name in outcomes}
    errors.sort(key=lambda e: min((order.index(n) for n in e.datasets if n in order), default=0))
    blocked = {name for e in errors for name in e.datasets}
    if finding is not None:
        phones.save()
        usccs.save()
        warehouse.replace_partition(
            ctx.engine, "dq_findings", findings.drop(columns=["quarter"]), quarter=str(ctx.quarter)
        )
    docs = write_docs(
        ctx.settings.out_dir / "validation" / ctx.batch_id,
        ctx.batch_id,
        str(ctx.quarter),
        outcomes,
        findings,
        errors,
    )
    if errors:
        raise QuarantineThresholdError("\n".join(str(e) for e in errors), tuple(sorted(blocked)))
    rows_in = sum(o.rows_in for o in outcomes.values())
    rows_valid = sum(o.rows_valid for o in outcomes.values())
    detail = {
        name: {
            "rows_in": o.rows_in,
            "valid": o.rows_valid,
            "quarantined": o.rows_quarantined,
            "seconds": round(o.seconds, 2),
            **({"rows_checked": o.rows_checked} if o.rows_checked is not None else {}),
        }
        for name, o in outcomes.items()
    }
    detail["findings"] = len(findings)
    detail["workers"] = max(len(processes), 1)
    detail["data_docs"] = str(docs)
    return StageResult(stage="validate", rows_in=rows_in, rows_out=rows_valid, detail=detail)
