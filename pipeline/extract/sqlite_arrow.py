"""SQLite sources read into Arrow: values rendered as text and rows hashed in C, not in Python.

The sales and service systems are SQLite files in the embedded setup, and their order lines
and tickets are most of the rows an extract lands. Read through Python's ``sqlite3`` every
value becomes a Python object that is then rendered as text and hashed one by one; read
through the ADBC SQLite driver the values arrive in Arrow arrays, where rendering and
hashing run in C++ (DuckDB's ``hash``), several times faster.

The text is the text :func:`pipeline.extract.base._text_column` gives for the same values
(tested against it): integers in digits, REAL values that are whole numbers without a
".0", other REAL values as Python's ``repr``, text as it is, blanks as missing.

The driver types each column from its first rows. A column that may hold several SQLite
types is therefore selected as one part per type, so that no part mixes two; a part that
held only NULL in the first rows and a value later stops the driver, and the rows from
there on are read through ``sqlite3`` and rendered in Python as before. Every value lands
either way, and a row's hash is the hash of its landed text whichever way it was read.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.arrowtext import stripped
from pipeline.readahead import read_ahead

log = logging.getLogger(__name__)

_MISMATCH = re.compile(r"Type mismatch in column (\d+)")
_ROWID_NAMES = ("rowid", "_rowid_", "oid")


class Unsupported(Exception):
    """The table cannot be read by row id (a table WITHOUT ROWID)."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_columns(path: Path, table: str) -> dict[str, str]:
    """The columns of ``table`` in the SQLite file ``path``, in table order, with their
    declared types."""
    with readonly(path) as conn:
        return {row[1]: row[2] for row in conn.execute(f"PRAGMA table_info({_quote(table)})")}


def _uri(path: Path) -> str:
    """``path`` as a read-only SQLite URI (for ``sqlite3`` and the ADBC driver alike)."""
    return f"{path.resolve().as_uri()}?mode=ro"


@contextmanager
def readonly(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(_uri(path), uri=True)
    try:
        yield conn
    finally:
        conn.close()


def rowid(path: Path, table: str, declared: dict[str, str]) -> str:
    """The name under which ``table`` (columns ``declared``, :func:`table_columns`) selects
    its row id; :class:`Unsupported` if it has none."""
    taken = {c.lower() for c in declared}
    name = next((n for n in _ROWID_NAMES if n not in taken), None)
    if name is None:
        raise Unsupported(f"every row id alias is a column of {table}")
    with readonly(path) as conn:
        try:
            conn.execute(f"SELECT {name} FROM {_quote(table)} LIMIT 0")
        except sqlite3.OperationalError as error:  # a view, or WITHOUT ROWID
            raise Unsupported(str(error)) from error
    return name


# -- text, as base._text_column renders the same values ---------------------------------------
def float_text(values: np.ndarray) -> Any:
    """float64 values as an Arrow string array, as :func:`base._text_column` renders them:
    whole numbers in digits (no ".0"), the rest as Python's ``repr``, NaN as missing.

    Arrow's cast writes the shortest digits that round-trip, as ``repr`` does, but switches
    to exponents at other magnitudes: it is used where both write plain decimals (from
    1e-4 to 1e16, when Arrow's text has no exponent) and numpy, whose text is ``repr``,
    for the rest.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    magnitude = np.abs(values)
    whole = ~missing & (np.floor(values) == values) & (magnitude < 2**62)
    plain = ~missing & ~whole & (magnitude >= 1e-4) & (magnitude < 1e16)
    text = pc.cast(pa.array(values, mask=~plain), pa.string())
    if plain.any():  # Arrow writes exponents for some of these (1.00000000005e+10)
        plain &= ~pc.fill_null(pc.match_substring(text, "e"), False).to_numpy(zero_copy_only=False)
    rest = ~missing & ~whole & ~plain
    if whole.any():
        digits = pc.cast(pa.array(np.where(whole, values, 0).astype(np.int64)), pa.string())
        text = pc.if_else(pa.array(whole), digits, text)
    if rest.any():
        from pipeline.extract.base import _text_column

        # whole numbers beyond 2**62, exponent forms, infinities: one by one, as before
        out = np.full(len(values), None, dtype=object)
        out[rest] = _text_column(pd.Series(values[rest], dtype="float64"))
        text = pc.if_else(pa.array(rest), pa.array(out, type=pa.string()), text)
    return text


def text_array(array: Any) -> Any:
    """One Arrow column from the driver as landed text; None for a type read otherwise."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_integer(kind):
        return pc.cast(array, pa.string())
    if pa.types.is_floating(kind):
        return float_text(array.to_numpy(zero_copy_only=False))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        array = array.cast(pa.string())
        # text that is empty or only whitespace is missing
        return pc.if_else(pc.equal(stripped(array), ""), pa.scalar(None, pa.string()), array)
    return None


def _invalid_text(array: Any) -> bool:
    import pyarrow as pa

    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return False
    try:
        array.validate(full=True)  # checks UTF-8
    except pa.ArrowInvalid:
        return True
    return False


# -- reading ---------------------------------------------------------------------------------
def _affinity_is_text(declared: str) -> bool:
    """SQLite's rule: a declared type naming CHAR, CLOB or TEXT (and not INT) gives the
    column TEXT affinity, so it holds only text, blobs and NULL."""
    declared = declared.upper()
    return "INT" not in declared and any(t in declared for t in ("CHAR", "CLOB", "TEXT"))


def _parts(column: str, declared: str) -> list[str]:
    """The expressions one column is selected as, each of one SQLite type (or NULL), so
    that the driver, which types a column from its first rows, never merges two types
    (it would write REAL values beside text as "1.050000e+01", and turn large integers
    beside REAL values into floats). A BLOB comes as its SQL literal (``X'00FF'``, as
    ``base._text_value`` writes bytes), not as raw bytes."""
    quoted = _quote(column)
    blob = "'X''' || hex(" + quoted + ") || ''''"
    if _affinity_is_text(declared):
        return [f"CASE WHEN typeof({quoted}) = 'blob' THEN {blob} ELSE {quoted} END"]
    return [
        f"CASE WHEN typeof({quoted}) = 'integer' THEN {quoted} END",
        f"CASE WHEN typeof({quoted}) = 'real' THEN {quoted} END",
        f"CASE typeof({quoted}) WHEN 'text' THEN {quoted} WHEN 'blob' THEN {blob} END",
    ]


def text_batches(
    path: Path,
    table: str,
    row_id: str,
    declared: dict[str, str],
    columns: list[str],
    chunk_rows: int,
    where: str,
    only: str | None = None,
) -> Iterator[tuple[np.ndarray, Any]]:
    """``columns`` of ``table`` as Arrow tables of landed text (column names as in the
    source), ``chunk_rows`` rows at a time, in row id order (the order of ``SELECT *``),
    each with its rows' row ids (int64). ``only``: a query of the row ids to read, if not
    all (the rows a change log names, :mod:`pipeline.extract.changelog`).

    ``row_id``: how the table selects its row id (:func:`rowid`); ``declared``: its columns
    and declared types (:func:`table_columns`). Each column is selected as one part per
    SQLite type (:func:`_parts`); the driver types a part from its first rows, and from the
    first value it cannot take on (a part that held only NULL so far) the rows are read
    through ``sqlite3`` and rendered in Python (:func:`base._as_text`).
    """
    import adbc_driver_sqlite.dbapi as adbc
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeline.extract.base import SourceError

    parts = [_parts(c, declared.get(c, "")) for c in columns]
    owner = [c for c, p in zip(columns, parts, strict=True) for _ in p]  # part -> column
    expressions = ", ".join(e for p in parts for e in p)
    last = None  # the row id of the last row yielded
    condition = f" WHERE {row_id} IN ({only})" if only else ""
    with adbc.connect(_uri(path)) as conn, conn.cursor() as cursor:
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(chunk_rows)})
        try:
            cursor.execute(
                f"SELECT {row_id}, {expressions} FROM {_quote(table)}{condition} ORDER BY {row_id}"
            )
            for batch in read_ahead(cursor.fetch_record_batch(), name="sqlite-read-ahead"):
                texts, at = [], 1
                for column, column_parts in zip(columns, parts, strict=True):
                    raw = [batch.column(at + i) for i in range(len(column_parts))]
                    at += len(column_parts)
                    if any(_invalid_text(r) for r in raw):
                        bad = _first_invalid_utf8(path, table, row_id, column, last)
                        raise SourceError(
                            f"{where}: column {column} holds text that is not UTF-8 (row id {bad})"
                        )
                    pieces = [text_array(r) for r in raw]
                    if any(p is None for p in pieces):
                        break
                    texts.append(pc.coalesce(*pieces) if len(pieces) > 1 else pieces[0])
                if len(texts) < len(columns):
                    log.info("%s: column %s read through sqlite3", where, column)
                    break
                row_ids = batch.column(0).to_numpy(zero_copy_only=False).astype(np.int64)
                yield row_ids, pa.table(texts, names=columns)
                last = int(row_ids[-1])
            else:
                return
        except OSError as error:  # the driver's errors come through Arrow's reader
            mismatch = _MISMATCH.search(str(error))
            if mismatch is None:
                raise SourceError(f"{where}: cannot read: {error}") from error
            log.info(
                "%s: column %s holds a value of a type its first rows did not; the rows "
                "after row id %s are read through sqlite3",
                where,
                owner[int(mismatch.group(1)) - 1],
                last,
            )
    conditions = [f"{row_id} IN ({only})" if only else None]
    conditions.append(None if last is None else f"{row_id} > {int(last)}")
    after = " AND ".join(c for c in conditions if c)
    after = f" WHERE {after}" if after else ""
    plain = ", ".join(_quote(c) for c in columns)
    sql = f"SELECT {row_id}, {plain} FROM {_quote(table)}{after} ORDER BY {row_id}"
    yield from _python_batches(path, sql, columns, chunk_rows, where)


def _first_invalid_utf8(path: Path, table: str, row_id: str, column: str, after: object) -> object:
    """The row id of the first row after row id ``after`` (None: from the start) whose
    ``column`` holds text that is not UTF-8."""
    sql = f"SELECT {row_id}, {_quote(column)} FROM {_quote(table)}"
    if after is not None:
        sql += f" WHERE {row_id} > {int(after)}"
    with readonly(path) as conn:
        conn.text_factory = bytes
        for found, value in conn.execute(f"{sql} ORDER BY {row_id}"):
            if isinstance(value, bytes):
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    return found
    return None


def _python_batches(
    path: Path, sql: str, columns: list[str], chunk_rows: int, where: str
) -> Iterator[tuple[np.ndarray, Any]]:
    """The rows ``sql`` selects (row id first) through ``sqlite3``, rendered as the object
    path renders them, with their row ids."""
    import pyarrow as pa

    from pipeline.extract.base import SourceError, _as_text, rows_frame

    with readonly(path) as conn:
        try:
            cursor = conn.execute(sql)
            while rows := cursor.fetchmany(chunk_rows):
                frame = rows_frame(rows, ["rowid", *columns])
                text = _as_text(frame.iloc[:, 1:])
                row_ids = frame["rowid"].to_numpy().astype(np.int64)
                yield (
                    row_ids,
                    pa.table({c: pa.array(text[c].to_numpy(), type=pa.string()) for c in columns}),
                )
        except sqlite3.Error as error:
            raise SourceError(f"{where}: cannot read: {error}") from error


def row_hashes(table: Any) -> np.ndarray:
    """A 64-bit hash per row of an Arrow table of text (int64), from every column in order;
    stable across processes and chunkings (DuckDB's ``hash``, which has no seed)."""
    import duckdb

    if not table.num_rows:
        return np.array([], dtype=np.int64)
    names = [f"c{i}" for i in range(table.num_columns)]
    with duckdb.connect() as conn:
        conn.register("text_rows", table.rename_columns(names))
        hashed = conn.sql(f"SELECT hash({', '.join(names)}) AS h FROM text_rows").arrow().read_all()
    values = hashed.column("h").to_numpy()
    return values.astype(np.uint64, copy=False).view(np.int64)
