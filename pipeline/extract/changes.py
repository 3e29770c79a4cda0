"""Change capture for the landing tables: row hashes, incremental landing and pending keys.

Every landed row carries ``row_hash`` (a 64-bit hash of its house values: key and fields,
not lineage) and ``source_row`` (its position in the source when it was landed). An
incremental extract still reads the whole source, but writes only what differs from the
rows already landed: rows whose hash is new are inserted, rows whose hash is gone are
deleted, and every other row stays as it was (with the lineage of the batch that landed it).
The result is the same landing table a full extract would write, up to lineage and the
order of the rows in the table: readers that need source order sort by ``source_row``
(:func:`in_source_order` says when they must).

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
from pipeline.extract.base import FileState, key_hashes

log = logging.getLogger(__name__)

CHANGE_COLUMNS = ("row_hash", "source_row")
PENDING = "raw_pending"
LANDING = "raw_landing"  # dataset -> are its landed rows in source order
BLANK_KEY = ""  # record_key of rows whose source_record_id is blank

# What a pending record's change can do to the records that refer to it (raw_pending.reach).
# A referring record is judged on its parent's key being landed and, for a dataset in
# CARRIED_VALUES, on the value of the key's first row (pipeline.validation.rules).
SAME = 0  # the key is landed as before, with the same carried value: nothing
APPEARED = 1  # the key was not landed before: records that referred to it were orphans
ANY = 2  # the key may have gone, or its carried value changed (NULL counts as this)


def has_change_columns(conn: sa.Connection, table: str) -> bool:
    """Was ``table`` landed with row hashes and source positions (so it can be compared
    with the source, and read in source order)?"""
    inspector = sa.inspect(conn)
    if not inspector.has_table(table):
        return False
    return set(CHANGE_COLUMNS) <= {c["name"] for c in inspector.get_columns(table)}


def landed_hash_counts(conn: sa.Connection, table: str) -> pd.Series:
    """How many landed rows carry each row hash (index: hash, sorted). Read before ``conn``
    changes ``table`` (on PostgreSQL the read runs on a connection of its own)."""
    from pipeline import warehouse

    hashes = warehouse.read_query_on(conn, f'SELECT "row_hash" FROM "{table}"')["row_hash"]
    values, counts = np.unique(hashes.to_numpy(dtype=np.int64), return_counts=True)
    return pd.Series(counts, index=values)


def referred(dataset: Dataset) -> bool:
    """Do other datasets refer to ``dataset``'s records?"""
    return any(dataset.name in d.parents.values() for d in DATASETS.values())


def _carried(dataset: Dataset) -> str | None:
    from pipeline.validation.rules import CARRIED_VALUES

    return CARRIED_VALUES.get(dataset.name)


def _first_rows(rows: pd.DataFrame, carried: str | None) -> dict[str, object]:
    """Per record key in ``rows`` (landed rows with ``source_record_id``, ``source_row``
    and the carried column): the carried text of its first row in source order (True when
    the dataset carries none)."""
    if not len(rows):
        return {}
    frame = pd.DataFrame(
        {
            "key": keys_of(rows["source_record_id"]),
            "row": rows["source_row"].astype(np.int64).to_numpy(),
            "value": rows[carried].astype(object).to_numpy() if carried else True,
        }
    )
    first = frame.sort_values("row", kind="stable").drop_duplicates("key")
    return {k: None if pd.isna(v) else v for k, v in zip(first["key"], first["value"], strict=True)}


def keys_of(keys: pd.Series) -> list[str]:
    """The record key of each landed ``source_record_id`` (:data:`BLANK_KEY` for a blank)."""
    return [BLANK_KEY if pd.isna(k) else k for k in keys.tolist()]


def reach(
    dataset: Dataset, before: pd.DataFrame, after: pd.DataFrame, keys: list[str]
) -> list[int]:
    """Per record key of ``keys``: what its change can do to the records referring to it
    (:data:`SAME`, :data:`APPEARED`, :data:`ANY`), from every landed row of those keys
    ``before`` and ``after`` the change. A blank key is never referred to."""
    carried = _carried(dataset)
    was, now = _first_rows(before, carried), _first_rows(after, carried)
    out = []
    for key in keys:
        if key == BLANK_KEY or (key in was and key in now and was[key] == now[key]):
            out.append(SAME)
        elif key in now and key not in was:
            out.append(APPEARED)
        else:
            out.append(ANY)
    return out


class TooManyChanges(RuntimeError):
    """So much of a dataset changed that landing it whole is cheaper than comparing."""


class LogMismatch(RuntimeError):
    """After applying a source's change log the landing does not match the source: the log
    missed changes, or the row ids moved (:mod:`pipeline.extract.changelog`)."""


# A comparison keeps the changed rows in memory; past this share of the landed rows (or one
# chunk, whichever is more) the extract lands the system whole instead.
MAX_CHANGED_SHARE = 0.10


def _sorted_union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The union of two sorted arrays of distinct values, sorted (by sorting, which for
    tens of millions of int64 is several times faster than ``np.union1d``'s hashing)."""
    both = np.concatenate([a, b])
    both.sort(kind="stable")
    if len(both) < 2:
        return both
    return both[np.concatenate(([True], both[1:] != both[:-1]))]


@dataclass
class Diff:
    """One dataset's incremental landing: what the source holds now against what is landed.

    Each chunk's hashes go through :meth:`filter`, which keeps only rows whose hash was
    landed a number of times other than once (new content, or landed duplicates); those
    rows, rendered, come back through :meth:`offer`. Memory holds the changes plus two int64
    per source row (row hash, key hash).
    """

    dataset: Dataset
    landed: pd.Series  # hash -> landed count
    hashes: list[np.ndarray] = field(default_factory=list)
    keys: list[np.ndarray] = field(default_factory=list)
    row_ids: list[np.ndarray] = field(default_factory=list)  # SQLite sources: positions
    kept: list[pd.DataFrame] = field(default_factory=list)
    rows: int = 0

    def __post_init__(self) -> None:
        # the hashes landed exactly once, sorted: a source row with one of them is unchanged
        # unless it now comes more than once (settled in :meth:`apply`)
        once = self.landed.index.to_numpy(dtype=np.int64)[self.landed.to_numpy() == 1]
        self._once = np.sort(once)
        self._kept_rows = 0
        self._chunk_rows = 0  # the largest chunk seen: a change of one chunk is always fine

    def filter(
        self, hashes: np.ndarray, keys: np.ndarray, row_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, int]:
        """The rows of the next chunk worth rendering (:data:`base.ROW_FILTER`): those
        whose hash was not landed exactly once; and the chunk's first row number."""
        first = self.rows
        self._chunk_rows = max(self._chunk_rows, len(hashes))
        self.hashes.append(hashes)
        self.keys.append(keys)
        if row_ids is not None:
            self.row_ids.append(row_ids)
        self.rows += len(hashes)
        if not len(self._once):
            return np.ones(len(hashes), dtype=bool), first
        # Looked up in sorted order: each search then starts where the last one ended,
        # instead of a random walk through millions of landed hashes (0.19 -> 0.03 s for a
        # chunk of 200,000 against 9.6 million).
        order = np.argsort(hashes)
        ordered = hashes[order]
        at = np.minimum(np.searchsorted(self._once, ordered), len(self._once) - 1)
        keep = np.empty(len(hashes), dtype=bool)
        keep[order] = self._once[at] != ordered
        return keep, first

    def offer(self, chunk: pd.DataFrame) -> None:
        """The rendered rows :meth:`filter` kept of a chunk."""
        if not len(chunk):
            return
        self.kept.append(chunk)
        self._kept_rows += len(chunk)
        limit = max(self._chunk_rows, MAX_CHANGED_SHARE * int(self.landed.sum()))
        if self._kept_rows > limit:
            raise TooManyChanges(
                f"{self.dataset.name}: more than {limit:,.0f} rows changed "
                f"({self._kept_rows:,} so far)"
            )

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
        row_ids = np.concatenate(self.row_ids) if self.row_ids else None
        self.hashes, self.keys, self.row_ids = [], [], []
        values, counts = np.unique(hashes, return_counts=True)
        landed = self.landed.index.to_numpy(dtype=np.int64)
        both = _sorted_union(values, landed)
        now_count = np.zeros(len(both), dtype=np.int64)
        now_count[np.searchsorted(both, values)] = counts
        was_count = np.zeros(len(both), dtype=np.int64)
        was_count[np.searchsorted(both, landed)] = self.landed.to_numpy()
        changed = pd.Index(both[now_count != was_count])
        del values, counts, landed, both, now_count, was_count
        kept = (
            pd.concat(self.kept, ignore_index=True)
            if self.kept
            else pd.DataFrame(columns=["source_record_id", "row_hash"])
        )
        if not len(changed):
            return {"rows": self.rows, "inserted": 0, "deleted": 0, "records_changed": 0}
        # the changed records: their keys in the landing and in the source
        among, listed = warehouse.one_of(conn.dialect.name, ":hashes", changed.tolist(), "bigint")
        landed_keys = [
            r[0]
            for r in conn.execute(
                sa.text(
                    f'SELECT DISTINCT "source_record_id" FROM "{table}" WHERE "row_hash" {among}'
                ),
                {"hashes": listed},
            )
        ]
        source_keys = [
            None if pd.isna(k) else k  # None or NA (Arrow-backed text) for a blank key
            for k in kept.loc[kept["row_hash"].isin(changed), "source_record_id"].tolist()
        ]
        record_keys = pd.Series(list(dict.fromkeys(landed_keys + source_keys)), dtype=object)
        pending_keys = [BLANK_KEY if k is None else k for k in record_keys]
        # every landed row of those records goes; its content is kept for unchanged rows
        among, listed = warehouse.one_of(conn.dialect.name, ":keys", pending_keys)
        match = f"COALESCE(\"source_record_id\", '') {among}"
        landed_rows = pd.read_sql(
            sa.text(f'SELECT * FROM "{table}" WHERE {match}'),
            conn,
            params={"keys": listed},
            dtype=object,
        )
        deleted = conn.execute(
            sa.text(f'DELETE FROM "{table}" WHERE {match}'), {"keys": listed}
        ).rowcount
        # ... and every source row of those records comes back at its source position
        wanted = np.sort(key_hashes(record_keys.to_numpy(dtype=object)))
        at = np.minimum(np.searchsorted(wanted, keys), len(wanted) - 1)
        positions = np.flatnonzero(wanted[at] == keys)
        content = pd.concat([kept, landed_rows], ignore_index=True)
        content["row_hash"] = content["row_hash"].astype(np.int64)
        content = content.drop_duplicates("row_hash").set_index("row_hash")
        # (a record whose key only shares a key hash with a changed one stays as landed)
        positions = positions[content.index.get_indexer(hashes[positions]) >= 0]
        rows = content.loc[hashes[positions]].reset_index()
        rows["source_row"] = (row_ids[positions] if row_ids is not None else positions).astype(
            np.int64
        )
        rows = rows[rows["source_record_id"].fillna(BLANK_KEY).isin(set(pending_keys))]
        rows = rows[list(landed_rows.columns)]  # the landing table's column order
        rows["extracted_at"] = pd.to_datetime(rows["extracted_at"], format="mixed")
        inserted = warehouse.insert_frame(conn, table, rows)
        set_source_order(conn, self.dataset.name, False)  # new rows may fill old gaps
        # every landed row of the changed records, before and after: what each change reaches
        reaches = (
            reach(self.dataset, landed_rows, rows, pending_keys) if referred(self.dataset) else None
        )
        add_pending(conn, self.dataset.name, pending_keys, batch_id, reaches)
        return {
            "rows": self.rows,
            "inserted": inserted,
            "deleted": int(deleted),
            "records_changed": len(record_keys),
        }


def _landed_rows_of(
    conn: sa.Connection, table: str, columns: list[str], keys: list[str]
) -> pd.DataFrame:
    """The landed rows of ``table`` whose record key is one of ``keys`` (``columns`` only)."""
    if not keys:
        return pd.DataFrame(columns=columns, dtype=object)
    from pipeline import warehouse

    among, listed = warehouse.one_of(conn.dialect.name, ":keys", keys)
    names = ", ".join(f'"{c}"' for c in columns)
    result = conn.execute(
        sa.text(f'SELECT {names} FROM "{table}" WHERE "source_record_id" {among}'),
        {"keys": listed},
    )
    return pd.DataFrame([tuple(row) for row in result], columns=columns, dtype=object)


def set_source_order(conn: sa.Connection, dataset: str, in_order: bool) -> None:
    """Record whether ``raw_<dataset>``'s rows are in source order (no table: nothing)."""
    if not sa.inspect(conn).has_table(LANDING):
        return
    conn.execute(sa.text(f'DELETE FROM "{LANDING}" WHERE "dataset" = :d'), {"d": dataset})
    conn.execute(
        sa.text(f'INSERT INTO "{LANDING}" ("dataset", "in_source_order") VALUES (:d, :o)'),
        {"d": dataset, "o": in_order},
    )


def in_source_order(conn: sa.Connection, dataset: str) -> bool:
    """Are ``raw_<dataset>``'s rows known to be in source order (landed whole)?"""
    if not sa.inspect(conn).has_table(LANDING):
        return False
    row = conn.execute(
        sa.text(f'SELECT "in_source_order" FROM "{LANDING}" WHERE "dataset" = :d'),
        {"d": dataset},
    ).first()
    return bool(row and row[0])


# -- pending record keys ---------------------------------------------------------------------
def _pending_select(dataset: str) -> str:
    return (
        f'SELECT "record_key" FROM "{PENDING}" WHERE "dataset" = \'{dataset}\' '
        'AND "record_key" IS NOT NULL'
    )


def pending_keys_sql(dataset: str) -> str:
    """A subquery of the record keys pending for ``dataset`` (a registry name), to match
    ``COALESCE(<key>, '')`` against."""
    return f"({_pending_select(dataset)})"


def pending_keys(conn: sa.Connection, dataset: str) -> list[str]:
    """The record keys :func:`pending_keys_sql` selects, sorted."""
    return sorted(conn.exec_driver_sql(_pending_select(dataset)).scalars())


def add_pending(
    conn: sa.Connection,
    dataset: str,
    keys: list[str],
    batch_id: str,
    reaches: list[int] | int | None = None,
) -> None:
    """Record that these records of ``dataset`` changed (not yet validated), with what each
    change can do to the records referring to them (one value for all, or one per key;
    None: not known, judged as :data:`ANY`). Written with COPY on PostgreSQL (an
    executemany of 40,000 keys took 1.5 s)."""
    from pipeline import warehouse

    if keys:
        frame = pd.DataFrame(
            {
                "dataset": dataset,
                "record_key": pd.Series(keys, dtype=object),
                "batch_id": batch_id,
                "reach": pd.Series(reaches, dtype="Int16")
                if isinstance(reaches, list)
                else pd.Series([reaches] * len(keys), dtype="Int16"),
            }
        )
        warehouse.insert_frame(conn, PENDING, frame)


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


def propagate(
    conn: sa.Connection, batch_id: str, orphan_rules: dict[tuple[str, str], str] | None = None
) -> None:
    """A child record whose parent record's change reaches it is re-checked too (its
    reference may now resolve, or no longer, or its parent's carried value moved): the
    parents' pending keys are carried to their children, in dataset order (parents first).
    A fully pending parent makes its children fully pending.

    Only the keys that may have gone or changed their carried value (:data:`ANY`, or not
    known) are looked for among all the child's landed rows. A key that appeared can only
    be referred to by records that were orphans: when ``orphan_rules`` names the rule that
    quarantines the child's orphans by that reference column (child, column) -> code, they
    are looked for among the child's quarantined rows with that defect; otherwise among all
    its landed rows too. The records carried this way are pending with :data:`SAME`: their
    own rows did not change, so the change goes no further."""
    inspector = sa.inspect(conn)
    orphan_rules = orphan_rules or {}
    for dataset in DATASETS.values():
        if not inspector.has_table(f"raw_{dataset.name}"):
            continue  # never landed: validate says so
        for column, parent in dataset.parents.items():
            if _fully_pending(conn, dataset.name):
                break  # re-checked whole anyway
            if _fully_pending(conn, parent):
                mark_full(conn, dataset.name, batch_id)
                break
            code = orphan_rules.get((dataset.name, column))
            anywhere = f'("reach" IS NULL OR "reach" <> {SAME})'
            if code is not None:
                anywhere = f'("reach" IS NULL OR "reach" NOT IN ({SAME}, {APPEARED}))'
            params = {"d": dataset.name, "p": parent, "b": batch_id, "same": SAME}
            insert = (
                f'INSERT INTO "{PENDING}" ("dataset", "record_key", "batch_id", "reach") '
                "SELECT DISTINCT :d, COALESCE(c.\"source_record_id\", ''), :b, :same "
            )
            keys = _pending_keys_where(conn, parent, anywhere)
            if keys is not None:  # among all the child's landed rows
                conn.execute(
                    sa.text(f'{insert} FROM "raw_{dataset.name}" c WHERE c."{column}" IN {keys}'),
                    params,
                )
            keys = _pending_keys_where(conn, parent, f'"reach" = {APPEARED}')
            if code is None or keys is None:
                continue
            if conn.dialect.name == "postgresql":
                referred = f"(c.\"raw_row\"::json ->> '{column}')"
            else:
                referred = f'json_extract(c."raw_row", \'$."{column}"\')'
            conn.execute(  # among its orphans
                sa.text(
                    f'{insert} FROM "quarantine" c WHERE c."dataset" = :d '
                    f"AND ',' || c.\"defects\" || ',' LIKE :code AND {referred} IN {keys}"
                ),
                {**params, "code": f"%,{code},%"},
            )


def _pending_keys_where(conn: sa.Connection, dataset: str, condition: str) -> str | None:
    """A subquery of ``dataset``'s pending record keys that meet ``condition`` (bound
    parameter ``:p``: the dataset), or None when none does."""
    where = f'"dataset" = :p AND "record_key" IS NOT NULL AND {condition}'
    found = conn.execute(
        sa.text(f'SELECT 1 FROM "{PENDING}" WHERE {where} LIMIT 1'), {"p": dataset}
    ).first()
    return None if found is None else f'(SELECT "record_key" FROM "{PENDING}" WHERE {where})'


def _fully_pending(conn: sa.Connection, dataset: str) -> bool:
    return bool(
        conn.execute(
            sa.text(
                f'SELECT COUNT(*) FROM "{PENDING}" WHERE "dataset" = :d AND "record_key" IS NULL'
            ),
            {"d": dataset},
        ).scalar_one()
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


# -- landing from a source's change log (pipeline.extract.changelog) -------------------------
CHANGE_LOG = "raw_change_log"


@dataclass(frozen=True)
class LogPosition:
    """What ``raw_<dataset>`` holds (rows, highest ``source_row``) and where it stands in
    its source's change log (None, None: the source keeps none)."""

    source_id: str | None
    seq: int | None
    source_rows: int
    max_row: int


def log_position(conn: sa.Connection, dataset: str) -> LogPosition | None:
    row = conn.execute(
        sa.text(
            f'SELECT "source_id", "seq", "source_rows", "max_row" FROM "{CHANGE_LOG}" '
            'WHERE "dataset" = :d'
        ),
        {"d": dataset},
    ).first()
    if row is None:
        return None
    seq = None if row[1] is None else int(row[1])
    return LogPosition(row[0], seq, int(row[2]), int(row[3]))


def set_log_position(conn: sa.Connection, dataset: str, position: LogPosition) -> None:
    """Record what ``raw_<dataset>`` holds and where it stands in its source's log."""
    conn.execute(sa.text(f'DELETE FROM "{CHANGE_LOG}" WHERE "dataset" = :d'), {"d": dataset})
    conn.execute(
        sa.text(
            f'INSERT INTO "{CHANGE_LOG}" ("dataset", "source_id", "seq", "source_rows", '
            '"max_row") VALUES (:d, :i, :s, :r, :m)'
        ),
        {
            "d": dataset,
            "i": position.source_id,
            "s": position.seq,
            "r": position.source_rows,
            "m": position.max_row,
        },
    )


FILES = "raw_files"


def landed_files(conn: sa.Connection, dataset: str) -> list[FileState]:
    """The files ``raw_<dataset>`` was landed from, in order, as they were read."""
    rows = conn.execute(
        sa.text(
            f'SELECT "path", "size", "digest", "rows", "encoding", "ends_line" FROM "{FILES}" '
            'WHERE "dataset" = :d ORDER BY "file_no"'
        ),
        {"d": dataset},
    ).fetchall()
    return [FileState(r[0], int(r[1]), r[2], int(r[3]), r[4], bool(r[5])) for r in rows]


def set_landed_files(conn: sa.Connection, dataset: str, files: list[FileState]) -> None:
    conn.execute(sa.text(f'DELETE FROM "{FILES}" WHERE "dataset" = :d'), {"d": dataset})
    if files:
        conn.execute(
            sa.text(
                f'INSERT INTO "{FILES}" ("dataset", "file_no", "path", "size", "digest", "rows", '
                '"encoding", "ends_line") VALUES (:d, :n, :p, :s, :h, :r, :e, :l)'
            ),
            [
                {
                    "d": dataset,
                    "n": number,
                    "p": f.path,
                    "s": f.size,
                    "h": f.digest,
                    "r": f.rows,
                    "e": f.encoding,
                    "l": f.ends_line,
                }
                for number, f in enumerate(files)
            ],
        )


@dataclass
class Logged:
    """One dataset's landing from what its source says changed: the rows a change log
    names (their current content, read by row id) replace the landed rows of those row
    ids; rows added at the end of files (no row ids) are added."""

    dataset: Dataset
    row_ids: list[int]  # what the log names: changed, added and removed rows
    kept: list[pd.DataFrame] = field(default_factory=list)

    def offer(self, chunk: pd.DataFrame) -> None:
        if len(chunk):
            self.kept.append(chunk)

    def _reach(
        self, conn: sa.Connection, gone: pd.DataFrame, rows: pd.DataFrame, keys: list[str]
    ) -> list[int]:
        """:func:`reach` of each changed record, from its ``gone`` and new ``rows``. The log
        names rows, not records, and a record may keep other landed rows: a key only among
        the new rows counts as appeared, one only among the gone rows as gone, which at
        worst re-checks more than needed. In a dataset with a carried value the first row
        may be one the log did not name: the other rows of the records whose named rows
        differ are read (between the delete and the insert)."""
        carried = _carried(self.dataset)
        if not carried:
            return reach(self.dataset, gone, rows, keys)
        columns = ["source_record_id", "source_row", carried]
        # (key, row, value) of the named rows, gone (side 0) and new (side 1): a key whose
        # triples are not the same on both sides is doubtful
        both = pd.concat(
            [gone.assign(side=0), rows.reindex(columns=columns).assign(side=1)], ignore_index=True
        )
        both = pd.DataFrame(
            {
                "key": keys_of(both["source_record_id"]),
                "row": both["source_row"].astype(np.int64).to_numpy(),
                "value": [None if pd.isna(v) else str(v) for v in both[carried].tolist()],
                "side": both["side"].to_numpy(),
            }
        )
        sides = both.groupby(["key", "row", "value"], dropna=False)["side"].agg(["sum", "count"])
        differ = sides.index.get_level_values("key")[sides["count"] != 2 * sides["sum"]]
        doubtful = sorted(set(differ) - {BLANK_KEY})
        others = _landed_rows_of(conn, f"raw_{self.dataset.name}", columns, doubtful)
        return reach(
            self.dataset,
            pd.concat([gone, others], ignore_index=True),
            pd.concat([rows, others], ignore_index=True),
            keys,
        )

    def apply(
        self, conn: sa.Connection, batch_id: str, was: LogPosition
    ) -> tuple[dict[str, int], int, int]:
        """Bring ``raw_<dataset>`` to the source for the rows the log names and record the
        changed record keys; return what changed, and the rows landed and their highest
        row id afterwards (from ``was``, the position before)."""
        from pipeline import warehouse

        table = f"raw_{self.dataset.name}"
        if not self.row_ids and not self.kept:
            nothing = {"rows": 0, "inserted": 0, "deleted": 0, "records_changed": 0}
            return nothing, was.source_rows, was.max_row
        carried = _carried(self.dataset)
        columns = ["source_record_id", "source_row", *([carried] if carried else [])]
        gone = pd.DataFrame(columns=columns)
        if self.row_ids:
            among, row_ids = warehouse.one_of(conn.dialect.name, ":ids", self.row_ids, "bigint")
            # one pass over the landing: the rows go, and say which records they were
            listed = ", ".join(f'"{c}"' for c in columns)
            result = conn.execute(
                sa.text(f'DELETE FROM "{table}" WHERE "source_row" {among} RETURNING {listed}'),
                {"ids": row_ids},
            )
            # (rows as tuples: given SQLAlchemy rows, pandas first looks each over for
            # column names, which took 0.5 s for 100,000 rows)
            gone = pd.DataFrame([tuple(row) for row in result], columns=columns, dtype=object)
        rows = (
            pd.concat(self.kept, ignore_index=True)
            if self.kept
            else pd.DataFrame(columns=["source_record_id", "source_row"])
        )
        landed_keys = keys_of(gone["source_record_id"])
        source_keys = keys_of(rows["source_record_id"])
        pending_keys = list(dict.fromkeys(landed_keys + source_keys))
        reaches = self._reach(conn, gone, rows, pending_keys) if referred(self.dataset) else None
        deleted = len(gone)
        inserted = warehouse.insert_frame(conn, table, rows) if len(rows) else 0
        set_source_order(conn, self.dataset.name, False)  # new rows may fill old gaps
        add_pending(conn, self.dataset.name, pending_keys, batch_id, reaches)
        top = int(rows["source_row"].max()) if len(rows) else 0
        if top >= was.max_row or was.max_row not in set(self.row_ids):
            top = max(top, was.max_row)
        else:  # the highest landed row went: look again
            top = int(
                conn.exec_driver_sql(
                    f'SELECT COALESCE(MAX("source_row"), 0) FROM "{table}"'
                ).scalar_one()
            )
        detail = {
            "rows": len(rows),
            "inserted": inserted,
            "deleted": deleted,
            "records_changed": len(pending_keys),
        }
        return detail, was.source_rows - deleted + inserted, top
