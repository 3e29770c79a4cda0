"""Change capture for the landing tables: row hashes, incremental landing and pending keys.

Every landed row carries ``row_hash`` (a 64-bit hash of its house values: key and fields,
not lineage) and ``source_row`` (its position in the source when it was landed). An
incremental extract still reads the whole source, but writes only what differs from the
rows already landed: rows whose hash is new are inserted, rows whose hash is gone are
deleted, and every other row stays as it was (with the lineage of the batch that landed it).
The result is the same landing table a full extract would write, up to lineage.

Which records changed is kept in ``raw_pending`` (dataset, record_key, batch_id) until the
validate stage has applied them to ``stg_<dataset>`` and ``quarantine``: a record key per
added, changed or removed record; ``record_key`` NULL means "the whole dataset" (a full
extract). Keys are the stripped ``source_record_id`` and ``''`` for a blank one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipeline.datasets import DATASETS, Dataset

log = logging.getLogger(__name__)

CHANGE_COLUMNS = ("row_hash", "source_row")
PENDING = "raw_pending"
BLANK_KEY = ""  # record_key of rows whose source_record_id is blank


def row_hashes(frame: pd.DataFrame, dataset: Dataset) -> np.ndarray:
    """A 64-bit hash per row of a house frame over its house columns (int64).

    Stable across processes and chunkings (pandas' fixed-key SipHash of each value);
    lineage (batch, extraction time) is left out, so an unchanged row keeps its hash.
    """
    hashed = pd.util.hash_pandas_object(frame[dataset.house_columns], index=False)
    return hashed.to_numpy().view(np.int64)


def with_change_columns(frame: pd.DataFrame, dataset: Dataset, first_row: int) -> pd.DataFrame:
    """``frame`` with ``row_hash`` and ``source_row`` (``first_row`` onwards) appended."""
    out = frame.copy(deep=False)
    out["row_hash"] = row_hashes(frame, dataset)
    out["source_row"] = np.arange(first_row, first_row + len(frame), dtype=np.int64)
    return out


def _has_columns(conn: sa.Connection, table: str, columns: tuple[str, ...]) -> bool:
    inspector = sa.inspect(conn)
    if not inspector.has_table(table):
        return False
    present = {c["name"] for c in inspector.get_columns(table)}
    return set(columns) <= present


def landed_hash_counts(conn: sa.Connection, table: str) -> pd.Series | None:
    """How many landed rows carry each row hash (index: hash), or None when the table is
    missing or was landed without hashes (then the extract is a full one)."""
    if not _has_columns(conn, table, CHANGE_COLUMNS):
        return None
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(f'SELECT "row_hash" FROM "{table}"')
        parts = []
        while rows := cursor.fetchmany(500_000):
            parts.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
    finally:
        cursor.close()
    hashes = np.concatenate(parts) if parts else np.array([], dtype=np.int64)
    values, counts = np.unique(hashes, return_counts=True)
    return pd.Series(counts, index=values)


def key_hashes(keys: pd.Series) -> np.ndarray:
    """A 64-bit hash per record key (None included), int64."""
    return pd.util.hash_pandas_object(keys, index=False).to_numpy().view(np.int64)


@dataclass
class Diff:
    """One dataset's incremental landing: what the source holds now against what is landed.

    Rows are offered chunk by chunk (:meth:`offer`); only rows whose hash was landed a
    number of times other than once are kept (new content, or landed duplicates), so memory
    holds the changes plus two int64 per source row (row hash, key hash).
    """

    dataset: Dataset
    landed: pd.Series  # hash -> landed count
    hashes: list[np.ndarray] = field(default_factory=list)
    keys: list[np.ndarray] = field(default_factory=list)
    kept: list[pd.DataFrame] = field(default_factory=list)
    rows: int = 0

    def __post_init__(self) -> None:
        # the hashes landed exactly once, sorted: a source row with one of them is unchanged
        # unless it now comes more than once (settled in :meth:`apply`)
        once = self.landed.index.to_numpy(dtype=np.int64)[self.landed.to_numpy() == 1]
        self._once = np.sort(once)

    def offer(self, chunk: pd.DataFrame) -> None:
        """A chunk of house rows with change columns, in source order."""
        hashes = chunk["row_hash"].to_numpy(dtype=np.int64)
        self.hashes.append(hashes)
        self.keys.append(key_hashes(chunk["source_record_id"]))
        keep = np.ones(len(hashes), dtype=bool)
        if len(self._once):
            at = np.minimum(np.searchsorted(self._once, hashes), len(self._once) - 1)
            keep = self._once[at] != hashes
        if keep.any():
            self.kept.append(chunk[keep])
        self.rows += len(chunk)

    def apply(self, conn: sa.Connection, batch_id: str) -> dict[str, int]:
        """Bring ``raw_<dataset>`` to the source's rows and record the changed record keys.

        A hash whose count differs between source and landing marks its record as changed.
        Every row of a changed record is landed again, at its current source position (so
        copies of one key keep their source order): rows with new content from the source,
        unchanged ones from the landing. Rows of other records are not touched.
        """
        from pipeline import warehouse

        table = f"raw_{self.dataset.name}"
        hashes = np.concatenate(self.hashes) if self.hashes else np.array([], dtype=np.int64)
        keys = np.concatenate(self.keys) if self.keys else np.array([], dtype=np.int64)
        values, counts = np.unique(hashes, return_counts=True)
        now = pd.Series(counts, index=values)
        both = now.index.union(self.landed.index)
        changed = both[
            (now.reindex(both, fill_value=0) != self.landed.reindex(both, fill_value=0)).to_numpy()
        ]
        kept = (
            pd.concat(self.kept, ignore_index=True)
            if self.kept
            else pd.DataFrame(columns=["source_record_id", "row_hash"])
        )
        if not len(changed):
            return {"rows": self.rows, "inserted": 0, "deleted": 0, "records_changed": 0}
        # the changed records: their keys in the landing and in the source
        temp = _temp_values(conn, "changed_hashes", "row_hash", "BIGINT", changed.tolist())
        landed_keys = [
            r[0]
            for r in conn.exec_driver_sql(
                f'SELECT DISTINCT "source_record_id" FROM "{table}" '
                f'WHERE "row_hash" IN (SELECT "row_hash" FROM {temp})'
            )
        ]
        source_keys = kept.loc[kept["row_hash"].isin(changed), "source_record_id"].tolist()
        record_keys = pd.Series(list(dict.fromkeys(landed_keys + source_keys)), dtype=object)
        # every landed row of those records goes; its content is kept for unchanged rows
        temp = _temp_values(
            conn,
            "changed_keys",
            "record_key",
            "TEXT",
            [BLANK_KEY if k is None else k for k in record_keys],
        )
        match = f'COALESCE("source_record_id", \'\') IN (SELECT "record_key" FROM {temp})'
        landed = pd.read_sql(sa.text(f'SELECT * FROM "{table}" WHERE {match}'), conn, dtype=object)
        deleted = conn.exec_driver_sql(f'DELETE FROM "{table}" WHERE {match}').rowcount
        # ... and every source row of those records comes back at its source position
        positions = np.flatnonzero(np.isin(keys, key_hashes(record_keys)))
        content = pd.concat([kept, landed], ignore_index=True)
        content["row_hash"] = content["row_hash"].astype(np.int64)
        content = content.drop_duplicates("row_hash").set_index("row_hash")
        rows = content.loc[hashes[positions]].reset_index()
        rows["source_row"] = positions.astype(np.int64)
        rows = rows[list(landed.columns)]  # the landing table's column order
        rows["extracted_at"] = pd.to_datetime(rows["extracted_at"], format="mixed")
        inserted = warehouse.insert_frame(conn, table, rows)
        add_pending(
            conn,
            self.dataset.name,
            [BLANK_KEY if k is None else k for k in record_keys],
            batch_id,
        )
        return {
            "rows": self.rows,
            "inserted": inserted,
            "deleted": int(deleted),
            "records_changed": len(record_keys),
        }


def _temp_values(conn: sa.Connection, name: str, column: str, sql_type: str, values: list) -> str:
    """A temporary one-column table ``name`` holding ``values`` (gone at commit on PostgreSQL)."""
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({column} {sql_type}) ON COMMIT DROP")
        with conn.connection.driver_connection.cursor() as cursor:
            with cursor.copy(f"COPY {name} ({column}) FROM STDIN") as copy:
                for value in values:
                    copy.write_row((value,))
            cursor.execute(f"ANALYZE {name}")
    else:
        conn.exec_driver_sql(f"CREATE TEMP TABLE {name} ({column} {sql_type})")
        conn.exec_driver_sql(f"INSERT INTO {name} ({column}) VALUES (?)", [(v,) for v in values])
    return name


# -- pending record keys ---------------------------------------------------------------------
def add_pending(conn: sa.Connection, dataset: str, keys: list[str], batch_id: str) -> None:
    """Record that these records of ``dataset`` changed (not yet validated)."""
    if keys:
        conn.execute(
            sa.text(
                f'INSERT INTO "{PENDING}" ("dataset", "record_key", "batch_id") VALUES (:d, :k, :b)'
            ),
            [{"d": dataset, "k": k, "b": batch_id} for k in keys],
        )


def mark_full(conn: sa.Connection, dataset: str, batch_id: str) -> None:
    """The whole of ``dataset`` was landed anew: validate all of it next time."""
    conn.execute(sa.text(f'DELETE FROM "{PENDING}" WHERE "dataset" = :d'), {"d": dataset})
    conn.execute(
        sa.text(
            f'INSERT INTO "{PENDING}" ("dataset", "record_key", "batch_id") VALUES (:d, NULL, :b)'
        ),
        {"d": dataset, "b": batch_id},
    )


@dataclass(frozen=True)
class Pending:
    """What validate has to redo for one dataset: everything, or these record keys."""

    full: bool
    keys: frozenset[str] = frozenset()
    batches: frozenset[str] = frozenset()


def propagate(conn: sa.Connection, batch_id: str) -> None:
    """A child record whose parent record changed is re-checked too (its reference may now
    resolve, or no longer): parents' pending keys are carried to their children, in
    dataset order (parents first). A fully pending parent makes its children fully pending."""
    inspector = sa.inspect(conn)
    for dataset in DATASETS.values():
        if not inspector.has_table(f"raw_{dataset.name}"):
            continue  # never landed: validate says so
        for column, parent in dataset.parents.items():
            full = conn.execute(
                sa.text(
                    f'SELECT COUNT(*) FROM "{PENDING}" WHERE "dataset" = :p AND "record_key" IS NULL'
                ),
                {"p": parent},
            ).scalar_one()
            if full:
                mark_full(conn, dataset.name, batch_id)
                continue
            conn.execute(
                sa.text(
                    f'INSERT INTO "{PENDING}" ("dataset", "record_key", "batch_id") '
                    f"SELECT DISTINCT :d, COALESCE(c.\"source_record_id\", ''), :b "
                    f'FROM "raw_{dataset.name}" c WHERE c."{column}" IN '
                    f'(SELECT "record_key" FROM "{PENDING}" WHERE "dataset" = :p)'
                ),
                {"d": dataset.name, "b": batch_id, "p": parent},
            )


def pending(conn: sa.Connection, dataset: str) -> Pending:
    rows = conn.execute(
        sa.text(f'SELECT "record_key", "batch_id" FROM "{PENDING}" WHERE "dataset" = :d'),
        {"d": dataset},
    ).fetchall()
    batches = frozenset(r[1] for r in rows)
    if any(r[0] is None for r in rows):
        return Pending(full=True, batches=batches)
    return Pending(full=False, keys=frozenset(r[0] for r in rows), batches=batches)


def clear_pending(conn: sa.Connection, dataset: str, batches: frozenset[str]) -> None:
    """Validate applied these batches' changes of ``dataset`` (in the caller's transaction)."""
    for batch in batches:
        conn.execute(
            sa.text(f'DELETE FROM "{PENDING}" WHERE "dataset" = :d AND "batch_id" = :b'),
            {"d": dataset, "b": batch},
        )
