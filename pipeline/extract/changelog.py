"""Change capture at a SQLite source: a change log that triggers keep, read by row id.

Without it an incremental extract must read a source whole to find the 1% that changed
(:mod:`pipeline.extract.changes` compares every row's hash with the landing). With it the
extract reads only the rows the log names since its last landing.

:func:`install` adds to a SQLite source database:

- ``crm_change_log (seq, table_name, row_id)``: one row per inserted, updated or deleted
  row of a tracked table (an update whose row id changes logs both ids), ``seq`` counting
  up (AUTOINCREMENT: never reused);
- ``crm_change_log_source (source_id)``: a random id for this log, so that a warehouse
  never reads a new log (a database created anew) against another one's position;
- three triggers per tracked table, ``crm_change_log_<table>_insert|update|delete``.

The log is append-only for the pipeline, which only reads sources: rows at or below every
warehouse's position (``raw_change_log.seq``) may be deleted by the source's owner.

What the extract trusts, and how it checks (:mod:`pipeline.extract`): a table is read
through the log only when all three of its triggers are there and the warehouse landed it
last with this log's id at a position the log has reached. After applying the changes,
the landed rows must number what the source holds and end at the same highest row id, read
in the same snapshot as the log's position; otherwise (changes made while the triggers
were missing, a ``VACUUM`` that renumbered the row ids of a table without an ``INTEGER
PRIMARY KEY``) the system is compared with the landing in full instead.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.extract.sqlite_arrow import _quote, readonly

LOG = "crm_change_log"
SOURCE = "crm_change_log_source"
EVENTS = ("insert", "update", "delete")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite database URL (None: another database, or in memory)."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def trigger_name(table: str, event: str) -> str:
    return f"{LOG}_{table}_{event}"


def install(path: Path, tables: list[str]) -> str:
    """Track changes to ``tables`` of the SQLite database ``path``; return the log's id.
    Idempotent: tables already tracked keep their triggers, and the log its rows and id."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {LOG} (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                "table_name TEXT NOT NULL, row_id INTEGER NOT NULL)"
            )
            conn.execute(f"CREATE TABLE IF NOT EXISTS {SOURCE} (source_id TEXT NOT NULL)")
            if conn.execute(f"SELECT COUNT(*) FROM {SOURCE}").fetchone()[0] == 0:
                conn.execute(f"INSERT INTO {SOURCE} VALUES (?)", (uuid.uuid4().hex,))
            for table in tables:
                name = "'" + table.replace("'", "''") + "'"
                log_row = f"INSERT INTO {LOG} (table_name, row_id) VALUES ({name}, %s);"
                bodies = {
                    "insert": log_row % "NEW.rowid",
                    "update": log_row
                    % "OLD.rowid"
                    + f" INSERT INTO {LOG} (table_name, row_id) SELECT {name}, NEW.rowid "
                    "WHERE NEW.rowid <> OLD.rowid;",
                    "delete": log_row % "OLD.rowid",
                }
                for event, body in bodies.items():
                    conn.execute(
                        f"CREATE TRIGGER IF NOT EXISTS {_quote(trigger_name(table, event))} "
                        f"AFTER {event.upper()} ON {_quote(table)} BEGIN {body} END"
                    )
            source_id = conn.execute(f"SELECT source_id FROM {SOURCE}").fetchone()[0]
    finally:
        conn.close()
    return source_id


@dataclass(frozen=True)
class Snapshot:
    """A source's change log at one moment: its id, its position (the highest ``seq``), the
    tables it tracks, and (when asked for) each table's row count and highest row id."""

    source_id: str
    seq: int
    tracked: frozenset[str]
    shapes: dict[str, tuple[int, int]]


def snapshot(path: Path, tables: list[str], shapes: list[str] = ()) -> Snapshot | None:
    """The change log of the SQLite database ``path`` (None: it has none), which of
    ``tables`` it tracks (all three triggers present), and the row counts and highest row
    ids of ``shapes`` — all read in one snapshot."""
    with readonly(path) as conn:
        conn.execute("BEGIN")
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if LOG not in names or SOURCE not in names:
            return None
        found = conn.execute(f"SELECT source_id FROM {SOURCE}").fetchone()
        if found is None:
            return None
        seq = conn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM {LOG}").fetchone()[0]
        tracked = frozenset(t for t in tables if all(trigger_name(t, e) in names for e in EVENTS))
        sizes = {}
        for table in shapes:
            count, top = conn.execute(
                f"SELECT COUNT(*), COALESCE(MAX(rowid), 0) FROM {_quote(table)}"
            ).fetchone()
            sizes[table] = (int(count), int(top))
        conn.execute("COMMIT")
    return Snapshot(str(found[0]), int(seq), tracked, sizes)


def changed_rows_query(table: str, since: int, upto: int) -> str:
    """A query of the row ids of ``table`` the log names after position ``since`` up to
    ``upto`` (for :func:`sqlite_arrow.text_batches`' ``only``)."""
    name = "'" + table.replace("'", "''") + "'"
    return (
        f"SELECT row_id FROM {LOG} WHERE table_name = {name} "
        f"AND seq > {int(since)} AND seq <= {int(upto)}"
    )


def changed_rows(path: Path, table: str, since: int, upto: int) -> list[int]:
    """The distinct row ids :func:`changed_rows_query` names."""
    with readonly(path) as conn:
        query = changed_rows_query(table, since, upto)
        return [r[0] for r in conn.execute(f"SELECT DISTINCT row_id FROM ({query})")]
