"""Warehouse I/O: the only module that writes tables.

Every write replaces exactly one partition (a whole table, or the rows matching a
partition key such as ``quarter='2026Q3'``) inside one transaction, so a crash
leaves the previous state and a rerun gives identical tables. Timestamps are naive
UTC; ``*_at`` columns are timestamps, ``*_date`` columns calendar dates.

SQLite is the embedded default; any SQLAlchemy URL works. On PostgreSQL rows are
loaded with ``COPY`` (psycopg 3), elsewhere with batched ``executemany``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pandas.api.types import infer_dtype
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

_TYPE_MAP = {
    "b": sa.Boolean,
    "i": sa.BigInteger,
    "u": sa.BigInteger,
    "f": sa.Float,
    "M": sa.DateTime,
}


def create_engine(url: str) -> Engine:
    """An engine for the warehouse URL; creates the SQLite file's folder when needed."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "postgresql":
        parsed = _without_jit(parsed)
    engine = sa.create_engine(parsed, future=True)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            # pysqlite begins a transaction only at the first INSERT/UPDATE/DELETE, so DDL
            # (DROP, CREATE, ALTER) would commit on its own; SQLAlchemy emits BEGIN instead
            # (its documented recipe), so a failed stage rolls its DDL back too.
            dbapi_connection.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # A transaction that reads before it writes asks for the write lock up front
            # (execution option ``sqlite_begin="IMMEDIATE"``): otherwise, when another writer
            # commits in between, its first write fails at once with "database is locked".
            conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', '')}")

    return engine


def _without_jit(url: sa.engine.URL) -> sa.engine.URL:
    """``url`` with PostgreSQL's JIT compilation off for its sessions, unless its
    ``options`` set ``jit`` themselves.

    PostgreSQL compiles a query to machine code when its estimated cost is high. The
    pipeline's queries are scans, joins and sums, where compiling costs more than it saves:
    reading a day's 97,000 changed order lines out of 10 million took 1.9 s with JIT (0.6 s
    of it compiling) and 1.2 s without; the 10-million-row sums of compute_metrics took as
    long either way. The ADBC reads connect with the engine's URL, so they get it too."""
    options = url.query.get("options", "")
    if isinstance(options, tuple):  # the parameter given twice: libpq takes the last
        options = options[-1]
    if "jit" in options:
        return url
    return url.update_query_dict({"options": f"{options} -c jit=off".strip()})


def shared(engine: Engine) -> bool:
    """Can another process open this warehouse (not an in-memory SQLite database)?"""
    url = engine.url
    return url.get_backend_name() != "sqlite" or url.database not in (None, "", ":memory:")


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@contextlib.contextmanager
def _sqlite_migration_lock(engine: Engine):
    """SQLite has no advisory locks: processes migrating one file take turns on a lock file."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    import fcntl

    with open(f"{database}.migrate-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the warehouse schema to ``revision`` with the versioned Alembic migrations."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with _sqlite_migration_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # parallel tasks may migrate at once: one at a time, the others then find head
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7201)")
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def table_exists(engine: Engine, table: str) -> bool:
    return sa.inspect(engine).has_table(table)


def has_rows(engine: Engine, table: str, **where: Any) -> bool:
    """Does ``table`` exist and hold a row with these column values?"""
    if not table_exists(engine, table):
        return False
    condition = " AND ".join(f'"{column}" = :{column}' for column in where) or "1 = 1"
    with engine.connect() as conn:
        found = conn.execute(sa.text(f'SELECT 1 FROM "{table}" WHERE {condition} LIMIT 1'), where)
        return found.first() is not None


def _column_type(series: pd.Series, name: str) -> sa.types.TypeEngine:
    """The SQL type of a new column. ``_date`` columns holding dates are DATE; text stays
    TEXT whatever its name (raw tables keep the source's text, "2026-13-01" included)."""
    if name.endswith("_date") and not (
        series.dtype.kind in "OU" and infer_dtype(series, skipna=True) in ("string", "empty")
    ):
        return sa.Date()
    kind = series.dtype.kind
    if kind in _TYPE_MAP:
        return _TYPE_MAP[kind]()
    return sa.Text()


def _reflected(conn: Connection, table: str) -> sa.Table:
    """``table`` with its columns as the database has them (only the columns: a writer
    needs no more, and SQLAlchemy warns about the expression indexes it cannot reflect)."""
    columns = sa.inspect(conn).get_columns(table)
    return sa.Table(table, sa.MetaData(), *[sa.Column(c["name"], c["type"]) for c in columns])


def _ensure_table(conn: Connection, table: str, df: pd.DataFrame) -> sa.Table:
    metadata = sa.MetaData()
    if sa.inspect(conn).has_table(table):
        existing = _reflected(conn, table)
        missing = [c for c in df.columns if c not in existing.columns]
        for column in missing:
            col_type = _column_type(df[column], column).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {col_type}')
        if missing:
            existing = _reflected(conn, table)
        return existing
    columns = [sa.Column(name, _column_type(df[name], name)) for name in df.columns]
    created = sa.Table(table, metadata, *columns)
    created.create(conn)
    return created


def _datetime_text(series: pd.Series, name: str) -> np.ndarray:
    """A datetime column as text (None for missing): UTC when zone-aware, ``_date`` columns
    as dates, the rest with microseconds."""
    if getattr(series.dt, "tz", None) is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    fmt = "%Y-%m-%d" if name.endswith("_date") else "%Y-%m-%d %H:%M:%S.%f"
    return series.dt.strftime(fmt).to_numpy(dtype=object, na_value=None)


def _datetime_arrow_text(series: pd.Series, name: str) -> Any:
    """:func:`_datetime_text` as an Arrow string array, cast in C (20x faster than
    ``strftime``); None for values that cast would render differently (finer than a
    microsecond, or years outside 1-9999): the caller then uses ``strftime``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if getattr(series.dt, "tz", None) is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    present = series.dropna()
    if len(present) and (present.min().year < 1 or present.max().year > 9999):
        return None
    try:
        array = pa.array(series, from_pandas=True).cast(pa.timestamp("us"))  # safe: exact
    except pa.ArrowInvalid:
        return None
    if name.endswith("_date"):
        return pc.floor_temporal(array, unit="day").cast(pa.date32()).cast(pa.string())
    return array.cast(pa.string())  # 2026-07-01 08:00:00.000000


def _python_values(df: pd.DataFrame) -> list[tuple]:
    """Rows as tuples of plain Python values (None for missing), dates as ISO text."""
    columns = []
    for name in df.columns:
        series = df[name]
        if series.dtype.kind == "M":
            values = _datetime_text(series, name).tolist()
        elif isinstance(series.dtype, np.dtype) and series.dtype.kind in "iub":
            values = series.tolist()  # Python ints/bools, no missing values possible
        elif isinstance(series.dtype, np.dtype) and series.dtype.kind == "f":
            floats = series.to_numpy()
            missing = np.isnan(floats)
            values = floats.tolist()
            if missing.any():
                values = [None if m else v for v, m in zip(values, missing.tolist(), strict=True)]
        else:
            raw = series.to_numpy(dtype=object, na_value=None)
            if infer_dtype(raw, skipna=True) in ("string", "empty"):
                values = raw.tolist()
            else:
                # numpy scalars -> Python scalars, so every driver understands them
                values = [v.item() if hasattr(v, "item") else v for v in raw]
        columns.append(values)
    if not columns:
        return []
    return list(zip(*columns, strict=True))


NUL_REPLACEMENT = "\ufffd"


def _warn_nul(table: str, df: pd.DataFrame, name: str, found: np.ndarray) -> None:
    """The warning for values of column ``name`` of ``df`` (True in ``found``) whose NUL
    characters, which PostgreSQL text cannot store (one would fail the whole write), are
    written as U+FFFD: it names the table, the column and the records
    (``source_record_id``, where the table has one)."""
    records = ""
    if "source_record_id" in df.columns:
        keys = df["source_record_id"].to_numpy(dtype=object)[found]
        shown = ", ".join(str(k) for k in keys[:5]) + (", …" if len(keys) > 5 else "")
        records = f" (source_record_id {shown})"
    log.warning(
        "%s: %s value(s) of column %s hold NUL characters, which PostgreSQL text cannot "
        "store; written with U+FFFD in their place%s",
        table,
        int(found.sum()),
        name,
        records,
    )


def _without_nul(array: Any) -> tuple[Any, np.ndarray]:
    """A text column (Arrow) with U+FFFD for its NUL characters, and where they were."""
    import pyarrow.compute as pc

    found = pc.fill_null(pc.match_substring(array, "\x00"), False).to_numpy(zero_copy_only=False)
    return pc.replace_substring(array, "\x00", NUL_REPLACEMENT), found


def _rows_without_nul(rows: list[tuple], df: pd.DataFrame, table: str) -> list[tuple]:
    """:func:`_python_values` rows of ``df`` with U+FFFD for NUL characters in text
    (:func:`_warn_nul`), for the rows the driver renders."""
    columns = list(zip(*rows, strict=True)) if rows else []
    for i, (name, values) in enumerate(zip(df.columns, columns, strict=True)):
        found = np.array([isinstance(v, str) and "\x00" in v for v in values], dtype=bool)
        if found.any():
            _warn_nul(table, df, name, found)
            columns[i] = tuple(
                v.replace("\x00", NUL_REPLACEMENT) if f else v
                for v, f in zip(values, found, strict=True)
            )
    return list(zip(*columns, strict=True))


def _copy_text(df: pd.DataFrame, table: str = "") -> memoryview | None:
    """``df`` in PostgreSQL's COPY text format (tabs, ``\\N`` for NULL), built column by column
    in Arrow's C++ kernels; None when a column holds values it cannot take as they are.
    NUL characters become U+FFFD, with a warning naming ``table`` (:func:`_warn_nul`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    nul: dict[str, np.ndarray] = {}  # column -> rows whose NUL characters were replaced
    for name in df.columns:
        series = df[name]
        if series.dtype.kind == "M":
            text = _datetime_arrow_text(series, name)
            if text is not None:
                columns.append(text)
                continue
            series = pd.Series(_datetime_text(series, name), dtype=object)
        try:
            array = pa.array(series, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return None  # mixed Python objects: the caller lets the driver render them
        kind = array.type
        if pa.types.is_timestamp(kind):  # datetime objects in an object column
            array = pa.array(_datetime_text(pd.Series(array.to_pandas()), name), type=pa.string())
            kind = array.type
        if pa.types.is_null(kind):
            array = pa.nulls(len(series), pa.string())
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            array = array.cast(pa.string())
            # One scan for the characters COPY text escapes (and NUL, which it cannot
            # take); most columns hold none, and four replacement passes over every value
            # were a tenth of validate's time.
            if pc.any(pc.match_substring_regex(array, r"[\\\t\n\r\x00]")).as_py():
                if pc.any(pc.match_substring(array, "\x00")).as_py():
                    array, nul[name] = _without_nul(array)
                for plain, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
                    array = pc.replace_substring(array, plain, escaped)
        elif (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_boolean(kind)
            or pa.types.is_date32(kind)
        ):
            array = pc.cast(array, pa.string())
        else:
            return None
        columns.append(array)
    if not columns:
        return None
    for name, found in nul.items():  # only now: the driver renders frames returned None
        _warn_nul(table, df, name, found)
    rows = pc.binary_join_element_wise(
        *columns, "\t", null_handling="replace", null_replacement="\\N"
    )
    rows = pc.binary_join_element_wise(rows, "", "\n")  # every row ends with a newline
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)
    start, end = int(offsets[rows.offset]), int(offsets[rows.offset + len(rows)])
    return memoryview(rows.buffers()[2])[start:end]


def insert_frame(conn: Connection, table: str, df: pd.DataFrame, chunk_rows: int = 50_000) -> int:
    """Append ``df`` to ``table`` on an open transaction (creating the table if needed)."""
    if df.empty and sa.inspect(conn).has_table(table):
        return 0
    _ensure_table(conn, table, df)
    if df.empty:
        return 0
    quoted = ", ".join(f'"{c}"' for c in df.columns)
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f'COPY "{table}" ({quoted}) FROM STDIN') as copy:
            for start in range(0, len(df), chunk_rows):
                chunk = df.iloc[start : start + chunk_rows]
                text = _copy_text(chunk, table)
                if text is not None:
                    copy.write(text)
                else:  # unusual Python objects in a column: the driver renders them
                    for row in _rows_without_nul(_python_values(chunk), chunk, table):
                        copy.write_row(row)
        return len(df)
    placeholders = ", ".join(
        "?" if conn.dialect.paramstyle == "qmark" else "%s" for _ in df.columns
    )
    statement = f'INSERT INTO "{table}" ({quoted}) VALUES ({placeholders})'
    for start in range(0, len(df), chunk_rows):
        rows = _python_values(df.iloc[start : start + chunk_rows])
        conn.exec_driver_sql(statement, rows)
    return len(df)


def replace_partition(engine: Engine, table: str, df: pd.DataFrame, **partition: Any) -> int:
    """Replace the rows of ``table`` whose partition columns equal ``partition`` with ``df``.

    With no partition the whole table is replaced. One transaction: readers see the
    old rows or the new ones, never a mix.
    """
    frame = df.copy()
    for key, value in partition.items():
        frame[key] = value
    with engine.begin() as conn:
        if sa.inspect(conn).has_table(table):
            _ensure_table(conn, table, frame)
            if partition:
                where = " AND ".join(f'"{k}" = :{k}' for k in partition)
                conn.execute(sa.text(f'DELETE FROM "{table}" WHERE {where}'), partition)
            else:
                conn.exec_driver_sql(f'DELETE FROM "{table}"')
        written = insert_frame(conn, table, frame)
    log.info("wrote %s rows to %s %s", written, table, partition or "")
    return written


def replace_table(engine: Engine, table: str, df: pd.DataFrame) -> int:
    """Replace the whole table with ``df`` in one transaction."""
    return replace_partition(engine, table, df)


def read_table(
    engine: Engine,
    table: str,
    columns: Iterable[str] | None = None,
    where: str | None = None,
    **partition: Any,
) -> pd.DataFrame:
    """Read a table (or one partition of it, or the rows that meet the SQL condition
    ``where``); ``*_at`` and ``*_date`` columns come back as datetimes."""
    if not table_exists(engine, table):
        raise LookupError(
            f"warehouse table {table!r} does not exist yet: run the stage that writes it"
        )
    selected = ", ".join(f'"{c}"' for c in columns) if columns else "*"
    sql = f'SELECT {selected} FROM "{table}"'
    conditions = [f'"{k}" = %({k})s' for k in partition] + ([f"({where})"] if where else [])
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    df = read_query(engine, sql, partition)
    for name in df.columns:
        if name.endswith(("_at", "_date")) and not pd.api.types.is_datetime64_any_dtype(df[name]):
            df[name] = pd.to_datetime(df[name], errors="coerce", format="mixed")
    return df


# PostgreSQL type OIDs -> the Arrow type a column is read as (others: the driver's path)
_ARROW_TYPES = {
    16: "bool",
    20: "int64",
    21: "int64",
    23: "int64",
    700: "float64",
    701: "float64",
    1700: "float64",
    25: "string",
    1043: "string",
    1042: "string",
    1114: "timestamp[us]",
    1082: "date32",
}


# ``%(name)s``: how read_query's SQL names a parameter
_PARAMETER = re.compile(r"%\((\w+)\)s")

# One ADBC connection per warehouse and process, reused: connecting costs ~50 ms
_ADBC_CONNECTIONS: dict[tuple[int, str], Any] = {}


def _forget_inherited_connections() -> None:
    """In a forked child: the parent's connections (and sockets) stay the parent's; they are
    kept referenced and marked closed so the child never closes them under the parent."""
    for connection in _ADBC_CONNECTIONS.values():
        connection._closed = True
        _INHERITED.append(connection)
    _ADBC_CONNECTIONS.clear()


_INHERITED: list[Any] = []
os.register_at_fork(after_in_child=_forget_inherited_connections)


def _close_adbc_connections() -> None:
    """Close this process's cached ADBC connections (at exit, before modules are torn down)."""
    for key in [k for k in _ADBC_CONNECTIONS if k[0] == os.getpid()]:
        with contextlib.suppress(Exception):
            _ADBC_CONNECTIONS.pop(key).close()


def _read_arrow(conn: Connection, sql: str, params: dict[str, Any]) -> pd.DataFrame | None:
    """The rows of ``sql`` (``%(name)s`` parameters) read into Arrow by the ADBC PostgreSQL
    driver (binary COPY, parsed in C): several times faster than fetching rows as Python
    objects, and the same frame ``pd.read_sql`` gives (text as ``str``, integers with NULLs
    as floats, booleans with NULLs and columns of only NULLs as objects, NUMERIC as floats).
    None when a column's type is not one this path knows; the caller then uses the driver."""
    import adbc_driver_postgresql.dbapi as adbc

    sql, described = _arrow_plan(conn, sql, params)
    if described is None:
        return None
    uri = _adbc_uri(conn.engine)
    key = (os.getpid(), uri)
    reader = _ADBC_CONNECTIONS.get(key)
    if reader is None:
        if not _ADBC_CONNECTIONS:
            atexit.register(_close_adbc_connections)
        reader = _ADBC_CONNECTIONS[key] = adbc.connect(uri, autocommit=True)
    with reader.cursor() as cursor:
        cursor.execute(sql)
        table = cursor.fetch_arrow_table()
    return _arrow_frame(table, described)


def _adbc_uri(engine: Engine) -> str:
    """The engine's URL as libpq takes it: its query percent-encoded (libpq reads a ``+``
    as itself, not as the space between two ``options``)."""
    url = engine.url.set(drivername="postgresql")
    uri = url.set(query={}).render_as_string(hide_password=False)
    pairs = [
        (name, value)
        for name, values in url.query.items()
        for value in (values if isinstance(values, tuple) else (values,))
    ]
    return f"{uri}?{urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote)}" if pairs else uri


def inline_parameters(conn: Connection, sql: str, params: dict[str, Any]) -> str:
    """``sql`` (PostgreSQL) with its ``%(name)s`` parameters written in as literals, quoted
    by psycopg: for the ADBC reads (which bind differently), and so that the planner sees
    an array as a constant, which it hashes."""
    if not params:
        return sql
    from psycopg import sql as pgsql

    driver = conn.connection.driver_connection
    return _PARAMETER.sub(lambda m: pgsql.Literal(params[m.group(1)]).as_string(driver), sql)


def _arrow_plan(
    conn: Connection, sql: str, params: dict[str, Any]
) -> tuple[str, list[tuple[str, str]] | None]:
    """``sql`` with its parameters inlined as literals, quoted by psycopg (ADBC binds
    differently), and its columns with the Arrow type each is read as: None when a
    column's type is not one the Arrow path knows, or two columns share a name."""
    sql = inline_parameters(conn, sql, params)
    with conn.connection.driver_connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM ({sql}) AS q LIMIT 0")
        described = [(d.name, _ARROW_TYPES.get(d.type_code)) for d in cursor.description]
    names = [name for name, _ in described]
    if any(kind is None for _, kind in described) or len(set(names)) != len(names):
        return sql, None
    return sql, described


def _arrow_frame(table: Any, described: list[tuple[str, str]]) -> pd.DataFrame:
    """An Arrow table read by ADBC as the frame ``pd.read_sql`` gives (see _read_arrow)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = [name for name, _ in described]
    if not table.num_rows:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in names})
    columns = []
    for (_, kind), column in zip(described, table.columns, strict=True):
        wanted = pa.type_for_alias(kind)
        columns.append(column if column.type == wanted else pc.cast(column, wanted))
    table = pa.table(columns, names=names)
    frame = table.to_pandas()
    for name in names:  # as the driver's rows give them: a column of only NULLs is objects
        if table.column(name).null_count == len(table):
            frame[name] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return frame


def stream_query(
    engine: Engine,
    sql: str,
    chunk_rows: int,
    params: dict[str, Any] | None = None,
    pg_settings: dict[str, str] | None = None,
) -> Generator[pd.DataFrame, None, None]:
    """The rows of a SELECT as frames of up to ``chunk_rows`` rows, typed as
    :func:`read_query` types them (per chunk: a chunk whose column holds only NULLs has
    it as objects). At least one frame, empty when there are no rows. On PostgreSQL the
    ADBC driver streams record batches (``pg_settings``: ``SET`` for its session first);
    elsewhere the driver's cursor fetches in chunks. Memory follows ``chunk_rows``, not
    the result."""
    import pyarrow as pa

    if engine.dialect.name == "postgresql":
        import adbc_driver_postgresql.dbapi as adbc

        with engine.connect() as conn:
            inlined, described = _arrow_plan(conn, sql, params or {})
        if described is not None:
            with (
                adbc.connect(_adbc_uri(engine), autocommit=True) as connection,
                connection.cursor() as cur,
            ):
                for name, value in (pg_settings or {}).items():
                    cur.execute(f"SET {name} = '{value}'")
                cur.execute(inlined)
                sent = False
                for table in _rebatched(cur.fetch_record_batch(), chunk_rows):
                    sent = True
                    yield _arrow_frame(table, described)
                if not sent:
                    yield _arrow_frame(pa.table({}), described)
            return
    named = sa.text(_PARAMETER.sub(r":\1", sql))
    with engine.connect().execution_options(stream_results=True) as conn:
        sent = False
        for frame in pd.read_sql(
            named, conn, params=params or None, coerce_float=True, chunksize=chunk_rows
        ):
            sent = True
            yield frame
        if not sent:
            yield pd.read_sql(named, conn, params=params or None, coerce_float=True)


def one_of(
    dialect: str, placeholder: str, values: Iterable[Any], sql_type: str = "text"
) -> tuple[str, Any]:
    """An SQL condition, to follow a column, that the column holds one of ``values`` (of
    ``sql_type``), bound at ``placeholder`` (``%(name)s`` or ``:name``), and the value to
    bind there: on PostgreSQL an array, which the server hashes; on SQLite a JSON list read
    by json_each.

    The array is cast to the column's type: only an array of the column's own type is
    hashed (psycopg sends Python integers as ``numeric``, and a ``bigint`` column compared
    with a ``numeric`` array is searched element by element: 100,000 row ids against
    10 million landed rows did not end in minutes, against 1.7 s cast)."""
    values = list(values)
    if dialect == "postgresql":
        return f"= ANY(CAST({placeholder} AS {sql_type}[]))", values
    return f'IN (SELECT "value" FROM json_each({placeholder}))', json.dumps(values)


def read_query(engine: Engine, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """The rows of a SELECT (``%(name)s`` parameters) as a frame; on PostgreSQL via ADBC."""
    with engine.connect() as conn:
        return read_query_on(conn, sql, params)


def read_query_on(conn: Connection, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """:func:`read_query` given a connection. On PostgreSQL ADBC reads on a connection of
    its own, so it does not see what ``conn``'s open transaction has written."""
    df = _read_arrow(conn, sql, params or {}) if conn.dialect.name == "postgresql" else None
    if df is None:
        named = sa.text(_PARAMETER.sub(r":\1", sql))
        df = pd.read_sql(named, conn, params=params or None, coerce_float=True)
    return df


# (column names, 2-D object arrays of up to chunk_rows rows each)
Rows = tuple[list[str], Generator[np.ndarray, None, None]]


def stream_rows(engine: Engine, sql: str, chunk_rows: int, leave_out: Iterable[str] = ()) -> Rows:
    """(column names, chunks): the rows of ``sql``, ``chunk_rows`` at a time, as 2-D arrays
    of the driver's Python objects, columns in ``leave_out`` left out. The scan starts at the
    table's beginning even while another process scans the same table (no synchronized
    scans on PostgreSQL). Through ADBC when it can (:func:`stream_text_rows`), else with
    the driver's cursor: plain tuples fill a numpy block in C, about twice as fast as
    SQLAlchemy's rows; on PostgreSQL a named (server-side) cursor streams them."""
    streamed = stream_text_rows(engine, sql, chunk_rows, leave_out)
    if streamed is not None:
        return streamed
    conn = engine.connect()
    try:
        dbapi = conn.connection.dbapi_connection
        server_side = conn.dialect.name == "postgresql"
        if server_side:
            with dbapi.cursor() as setting:
                setting.execute("SET LOCAL synchronize_seqscans = off")
        cursor = dbapi.cursor(name="stream_rows") if server_side else dbapi.cursor()
        cursor.execute(sql)
        columns = [d[0] for d in cursor.description]
    except BaseException:
        conn.close()
        raise
    kept = [i for i, c in enumerate(columns) if c not in set(leave_out)]

    def chunks() -> Generator[np.ndarray, None, None]:
        try:
            while rows := cursor.fetchmany(chunk_rows):
                block = np.empty((len(rows), len(columns)), dtype=object)
                block[:] = rows
                yield block if len(kept) == len(columns) else block[:, kept]
        finally:
            cursor.close()
            conn.close()

    return [columns[i] for i in kept], chunks()


def stream_text_rows(
    engine: Engine, sql: str, chunk_rows: int, leave_out: Iterable[str] = ()
) -> Rows | None:
    """(column names, chunks): the rows of ``sql`` on PostgreSQL, ``chunk_rows`` at a time,
    as 2-D arrays of Python objects (columns in the order of the names), read by ADBC
    (binary COPY, streamed): about twice as fast as a server-side cursor.

    The objects are those the driver's rows would hold: ``str`` and None, and
    ``datetime`` for the few timestamp columns. For queries whose columns (apart from
    those in ``leave_out``, not in the chunks) are text or timestamps without time zone.
    None when that is not so, or on another database (:func:`stream_rows` then reads
    with the driver). On a connection of its own, without synchronized scans.
    """
    if engine.dialect.name != "postgresql":
        return None
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow as pa

    uri = _adbc_uri(engine)
    connection = adbc.connect(uri, autocommit=True)
    try:
        cursor = connection.cursor()
        cursor.execute("SET synchronize_seqscans = off")
        cursor.execute(sql)
        reader = cursor.fetch_record_batch()
        kept = [n for n in reader.schema.names if n not in set(leave_out)]
        types = [reader.schema.field(n).type for n in kept]
        if not all(_text(t) or (pa.types.is_timestamp(t) and t.tz is None) for t in types):
            connection.close()
            return None
    except BaseException:
        connection.close()
        raise

    def chunks() -> Generator[np.ndarray, None, None]:
        try:
            for table in _rebatched(reader, chunk_rows):
                yield _object_block(table, kept)
        finally:
            cursor.close()
            connection.close()

    return kept, chunks()


def _rebatched(batches: Iterable[Any], chunk_rows: int) -> Generator[Any, None, None]:
    """Arrow record batches as tables of ``chunk_rows`` rows (the last one shorter; none
    when there are no rows)."""
    import pyarrow as pa

    pending: list[Any] = []
    rows = 0
    for batch in batches:
        pending.append(batch)
        rows += batch.num_rows
        while rows >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            pending, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield pa.Table.from_batches(pending)


def _text(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _object_block(table: Any, names: list[str]) -> np.ndarray:
    """The columns ``names`` as one 2-D object array: a frame made from it with
    ``dtype=object`` takes it as its single block, without copying or inferring types."""
    block = np.empty((table.num_rows, len(names)), dtype=object)
    for i, name in enumerate(names):
        column = table.column(name)
        if _text(column.type):
            block[:, i] = column.to_numpy(zero_copy_only=False)
        else:  # timestamps as datetime objects, as psycopg gives them; each distinct once
            encoded = column.combine_chunks().dictionary_encode()
            distinct = np.array([*encoded.dictionary.to_pylist(), None], dtype=object)
            codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            block[:, i] = distinct[codes]  # -1: the None after the distinct values
    return block


def frame_digest(df: pd.DataFrame) -> str:
    """A content hash of a frame independent of row order (for idempotency checks)."""
    if df.empty:
        return "empty:" + ",".join(sorted(df.columns))
    ordered = df[sorted(df.columns)]
    hashes = pd.util.hash_pandas_object(ordered.astype(str), index=False).to_numpy()
    return f"{hashlib.sha256(np.sort(hashes).tobytes()).hexdigest()}:{len(df)}"
