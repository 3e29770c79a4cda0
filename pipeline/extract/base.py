"""Shared reading for the source adapters: SQL tables by URL, CSV (encoding detected) and Excel.

Raw values are kept as text (``None`` for blank) so that nothing is lost before
validation decides what a value means; renames and lineage are added here.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import io
import logging
import sqlite3
import unicodedata
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pandas.api.types import infer_dtype
from python_calamine import CalamineError

from pipeline.arrowtext import as_arrow_text, stripped
from pipeline.datasets import Dataset
from pipeline.extract import sqlite_arrow

log = logging.getLogger(__name__)

CSV_ENCODINGS = ("utf-8-sig", "gb18030")


class SourceError(RuntimeError):
    """A source cannot be read as its contract says: names the source, the table or file, and the column."""


def _text_value(value: object) -> str | None:
    """One raw value as text; blanks and missing values become None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float):
        if value != value:  # NaN
            return None
        # Integers stored as REAL must not grow a ".0".
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, pd.Timestamp | datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bytes | bytearray | memoryview):  # a BLOB: its SQL literal
        return "X'" + bytes(value).hex().upper() + "'"
    text = str(value)
    return text if text.strip() else None


def _text_column(series: pd.Series) -> np.ndarray:
    """``_text_value`` of every value of a column, vectorized for the common column types."""
    kind = series.dtype.kind
    if kind in "iub":  # no missing values in these numpy dtypes
        return series.astype(str).to_numpy(dtype=object)
    if kind == "f":
        values = series.to_numpy(dtype="float64")
        out = np.full(len(values), None, dtype=object)
        present = ~np.isnan(values)
        # integers stored as REAL must not grow a ".0" (int64's range; bigger ones one by one)
        whole = present & (np.floor(values) == values) & (np.abs(values) < 2**62)
        out[whole] = values[whole].astype(np.int64).astype(str)
        big = present & ~whole & np.isfinite(values) & (np.floor(values) == values)
        out[big] = [str(int(v)) for v in values[big]]
        rest = present & ~whole & ~big
        out[rest] = values[rest].astype(str)  # numpy's float64 text is Python's repr
        return out
    raw = series.to_numpy(dtype=object)  # missing values as they are (None, NaN, NA)
    inferred = infer_dtype(raw, skipna=True)
    if inferred in ("string", "empty"):
        blank = _blank_in_arrow(raw)
        if blank is not None:
            out = raw.copy()
            out[blank] = None
            return out
    values = series.to_numpy(dtype=object, na_value=None)
    if inferred in ("string", "empty"):
        out = values.copy()
        out[_blank(values)] = None
        return out
    if inferred == "integer":  # Python ints from a driver, maybe with None
        out = values.copy()
        present = _PRESENT(values).astype(bool)
        out[present] = values[present].astype(str)
        return out
    if inferred == "floating":
        return _text_column(pd.Series(values, dtype="float64"))
    if inferred == "mixed-integer-float":  # e.g. SQLite NUMERIC: 100 stored as int, 100.5 as real
        out = np.full(len(values), None, dtype=object)
        ints = _IS_INT(values).astype(bool)
        floats = _PRESENT(values).astype(bool) & ~ints
        out[ints] = values[ints].astype(str)
        out[floats] = _text_column(pd.Series(values[floats], dtype="float64"))
        return out
    return np.array([_text_value(v) for v in values], dtype=object)


# ``v.isspace()`` is exactly "only whitespace" as ``str.strip()`` sees it; one C-level loop
_BLANK = np.frompyfunc(lambda v: v is not None and (not v or v.isspace()), 1, 1)


def _blank(values: np.ndarray) -> np.ndarray:
    """True where a string is empty or only whitespace (None is not blank)."""
    return _BLANK(values).astype(bool)


def _blank_in_arrow(values: np.ndarray) -> np.ndarray | None:
    """True where a value is missing (None, NaN, NA) or text that is empty or only
    whitespace, found in Arrow's C kernels (several times faster than a Python loop over
    millions of values); None when the values are not all text or missing."""
    import pyarrow.compute as pc

    array = as_arrow_text(values)
    if array is None:
        return None
    empty = pc.equal(stripped(array), "")
    return pc.fill_null(empty, True).to_numpy(zero_copy_only=False)


_PRESENT = np.frompyfunc(lambda v: v is not None, 1, 1)
_IS_INT = np.frompyfunc(lambda v: isinstance(v, int) and not isinstance(v, bool), 1, 1)


def _as_text(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {name: pd.Series(_text_column(df[name]), dtype=object) for name in df.columns},
    )


# -- row hashes (change capture) -------------------------------------------------------------
_NULL_HASH = np.uint64(0x9E3779B97F4A7C15)  # a missing value (pandas hashes None as "None")
_EXACT = 2.0**53  # integers up to this magnitude are exact as float64


def value_hashes(values: np.ndarray) -> np.ndarray:
    """A 64-bit hash per value (uint64) of an object array of text and None."""
    # Values are mostly distinct (keys, amounts): hashing each directly is about 3x faster
    # than factorizing first (pandas' default), measured on order lines.
    hashed = pd.util.hash_array(values, categorize=False)
    hashed[pd.isna(values)] = _NULL_HASH
    return hashed


def _number_hashes(values: np.ndarray) -> np.ndarray | None:
    """Hashes of numbers (and None) by their float64 value, or by their digits beyond
    2**53; None when they do not convert."""
    try:
        numbers = np.array(values, dtype=np.float64)  # None becomes NaN
    except (OverflowError, TypeError, ValueError):
        return None
    hashed = pd.util.hash_array(numbers)
    big = np.abs(np.nan_to_num(numbers)) > _EXACT
    if big.any():
        digits = [repr(v) if isinstance(v, float) else str(v) for v in values[big]]
        hashed[big] = value_hashes(np.array(digits, dtype=object))
    hashed[np.isnan(numbers)] = _NULL_HASH
    return hashed


_IS_STR = np.frompyfunc(lambda v: type(v) is str, 1, 1)
_IS_NUMBER = np.frompyfunc(lambda v: type(v) in (int, float), 1, 1)


def _raw_value_hashes(values: np.ndarray) -> np.ndarray:
    """A 64-bit hash per raw source value that depends on the value alone, not on the
    other values of its chunk (so an unchanged row keeps its hash whatever lands beside it).

    Text is hashed as it is; numbers by their float64 value (int 5 and float 5.0 land as
    the same text "5", so they may share a hash) unless beyond 2**53, then by their digits;
    anything else (dates, booleans, decimals) by the text it lands as. A column of mixed
    kinds is hashed value by value the same way.
    """
    kind = infer_dtype(values, skipna=True)
    if kind in ("string", "empty"):
        return value_hashes(values)
    if kind in ("integer", "floating", "mixed-integer-float"):
        hashed = _number_hashes(values)
        if hashed is not None:
            return hashed
    if kind in ("mixed", "mixed-integer"):
        text = _IS_STR(values).astype(bool)
        number = _IS_NUMBER(values).astype(bool)
        hashed = np.empty(len(values), dtype=np.uint64)
        hashed[text] = value_hashes(values[text])
        numbers = _number_hashes(values[number])
        if numbers is not None:
            rest = ~(text | number)
            hashed[number] = numbers
        else:
            rest = ~text
        hashed[rest] = value_hashes(_text_column(pd.Series(values[rest], dtype=object)))
        return hashed
    return value_hashes(_text_column(pd.Series(values, dtype=object)))


def raw_row_hashes(raw: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash per row of raw source values (int64), combined in column order.

    Computed before the values are rendered as text, so that an extract comparing a source
    with its last landing renders only the rows that changed. Stable across processes and
    chunkings: a value's hash depends on the value alone (pandas' fixed-key SipHash).
    """
    combined = np.full(len(raw), 0x345678, dtype=np.uint64)
    multiplier = np.uint64(1000003)
    for i, name in enumerate(raw.columns):
        hashed = _raw_value_hashes(raw[name].to_numpy(dtype=object))
        combined = (combined ^ hashed) * multiplier
        multiplier += np.uint64(82520 + 2 * (len(raw.columns) - i))
    return combined.view(np.int64)


def key_hashes(keys: np.ndarray) -> np.ndarray:
    """A 64-bit hash per record key as landed (stripped text or None), int64."""
    return value_hashes(keys).view(np.int64)


# While an extract lands a source it sets this: given a dataset, its chunk's row hashes, a
# function giving the chunk's record-key hashes (computed only when asked for) and the
# rows' SQLite row ids (None for other sources), it answers which rows to render (when it
# compares with the last landing, the others are landed already) and the chunk's first row
# number in the source. A row's position in the source (``source_row``) is its row id, or
# else its row number.
RowFilter = Callable[
    [str, np.ndarray, Callable[[], np.ndarray], np.ndarray | None], tuple[np.ndarray, int]
]
ROW_FILTER: ContextVar[RowFilter | None] = ContextVar("ROW_FILTER", default=None)
# While an extract lands tables from a SQLite source's change log it sets this: dataset name
# -> a query of the row ids to read (:func:`changelog.changed_rows_query`); others read whole.
ONLY_ROWS: ContextVar[dict[str, str] | None] = ContextVar("ONLY_ROWS", default=None)


def _stripped(values: np.ndarray) -> np.ndarray:
    return np.array([v.strip() if v is not None else None for v in values], dtype=object)


def _folded(name: object) -> str:
    """A column name as a reader sees it: full-width characters, case and spaces ignored."""
    return "".join(unicodedata.normalize("NFKC", str(name)).casefold().split())


def _near_names(missing: list[str], columns: list[str]) -> str:
    """The end of a missing-column error: the source's columns, and per missing name the
    source's column that differs from it only in full-width characters, case or spaces
    (``金额（元）`` for ``金额(元)``, ``CSAT`` for ``csat``)."""
    folded = {_folded(c): c for c in reversed(columns)}
    near = [f"{folded[_folded(m)]!r} for {m!r}" for m in missing if _folded(m) in folded]
    shown = ", ".join(map(str, columns[:40])) + (" …" if len(columns) > 40 else "")
    hint = (
        f"; it has {', '.join(near)}, which differ in full-width characters, case or spaces"
        if near
        else ""
    )
    return f"{hint}; the source's columns: {shown or '(none)'}"


def _house_columns(columns: list[str], dataset: Dataset, where: str) -> list[str]:
    """The source columns ``dataset`` reads, in its order; a :class:`SourceError` naming
    the missing ones, a warning for the ones it ignores."""
    rename = dataset.rename
    missing = [raw_name for raw_name in rename if raw_name not in columns]
    if missing:
        raise SourceError(
            f"{dataset.system} source {where}: column(s) {', '.join(missing)} missing "
            f"(dataset {dataset.name} needs {', '.join(rename)}){_near_names(missing, columns)}"
        )
    extra = [c for c in columns if c not in rename]
    if extra:
        log.warning(
            "%s source %s: ignoring unexpected column(s) %s",
            dataset.system,
            where,
            ", ".join(map(str, extra)),
        )
    return list(rename)


def house_frame(
    raw: pd.DataFrame,
    dataset: Dataset,
    where: str,
    batch_id: str,
    extracted_at: datetime,
    row_ids: np.ndarray | None = None,
) -> pd.DataFrame:
    """Check the raw columns, rename to house names, keep text values, add lineage and
    ``row_hash`` (:func:`raw_row_hashes`).

    With a :data:`ROW_FILTER` set only the rows it keeps are rendered, and each gets its
    position in the source (``source_row``): from ``row_ids`` if given, else its number.
    """
    selected = raw[_house_columns(list(raw.columns), dataset, where)]
    hashes = raw_row_hashes(selected)
    row_filter = ROW_FILTER.get()
    positions = None
    if row_filter is not None:
        keep, first = row_filter(
            dataset.name,
            hashes,
            lambda: key_hashes(_stripped(_text_column(selected[dataset.key_raw]))),
            row_ids,
        )
        positions = row_ids[keep] if row_ids is not None else first + np.flatnonzero(keep)
        selected, hashes = selected[keep], hashes[keep]
    frame = _as_text(selected).rename(columns=dataset.rename)
    # Record keys and references are identifiers: stripped here, so that the landing tables
    # match records by plain equality (validation strips every value anyway).
    for name in ("source_record_id", *dataset.parents):
        identifiers = _stripped(frame[name].to_numpy(dtype=object))
        frame[name] = pd.Series(identifiers, index=frame.index, dtype=object)
    return _with_lineage(frame, hashes, positions, dataset, batch_id, extracted_at)


def house_text_frame(
    text: Any,
    dataset: Dataset,
    batch_id: str,
    extracted_at: datetime,
    row_ids: np.ndarray | None = None,
) -> pd.DataFrame:
    """:func:`house_frame` of an Arrow table of landed text (the source's columns that
    ``dataset`` reads, :mod:`sqlite_arrow`): hashed, filtered and stripped in Arrow; the
    columns come as Arrow-backed strings. ``row_hash`` is the hash of the text
    (:func:`sqlite_arrow.row_hashes`); ``row_ids``: the rows' SQLite row ids, their
    ``source_row``."""
    import pyarrow as pa

    hashes = sqlite_arrow.row_hashes(text)
    row_filter = ROW_FILTER.get()
    positions = None
    if row_filter is not None:
        key = text.column(dataset.key_raw)
        keep, first = row_filter(
            dataset.name,
            hashes,
            lambda: key_hashes(stripped(key).to_numpy(zero_copy_only=False)),
            row_ids,
        )
        positions = row_ids[keep] if row_ids is not None else first + np.flatnonzero(keep)
        text, hashes = text.filter(pa.array(keep)), hashes[keep]
    text = text.rename_columns([dataset.rename[c] for c in text.column_names])
    for name in ("source_record_id", *dataset.parents):
        at = text.column_names.index(name)
        text = text.set_column(at, name, stripped(text.column(name)))
    frame = text.to_pandas(types_mapper=pd.ArrowDtype)
    return _with_lineage(frame, hashes, positions, dataset, batch_id, extracted_at)


def _with_lineage(
    frame: pd.DataFrame,
    hashes: np.ndarray,
    positions: np.ndarray | None,
    dataset: Dataset,
    batch_id: str,
    extracted_at: datetime,
) -> pd.DataFrame:
    frame.insert(0, "source_system", dataset.system)
    frame["batch_id"] = batch_id
    frame["extracted_at"] = pd.Timestamp(extracted_at)
    frame["row_hash"] = hashes
    if positions is not None:
        frame["source_row"] = positions.astype(np.int64)
    return frame.reset_index(drop=True)


def read_sql_table(
    url: str,
    dataset: Dataset,
    batch_id: str,
    extracted_at: datetime,
    chunk_rows: int,
) -> Iterator[pd.DataFrame]:
    """Read ``dataset.raw`` from a SQL source in chunks of house-named text rows.

    A SQLite file is read into Arrow (:mod:`sqlite_arrow`); other databases, and SQLite
    views and tables without row ids, through their driver's cursor. With a query in
    :data:`ONLY_ROWS` only the rows of those row ids are read (a SQLite table's changes).
    """
    where = f"{_safe(url)} table {dataset.raw}"
    only = (ONLY_ROWS.get() or {}).get(dataset.name)
    database = _sqlite_file(url, dataset)
    if database is not None:
        declared = sqlite_arrow.table_columns(database, dataset.raw)
        columns = _house_columns(list(declared), dataset, where)
        try:
            row_id = sqlite_arrow.rowid(database, dataset.raw, declared)
        except sqlite_arrow.Unsupported as reason:
            log.info("%s: read through the driver's cursor (%s)", where, reason)
        else:
            batches = sqlite_arrow.text_batches(
                database, dataset.raw, row_id, declared, columns, chunk_rows, where, only
            )
            for row_ids, text in batches:
                yield house_text_frame(text, dataset, batch_id, extracted_at, row_ids)
            return
    if only is not None:
        raise SourceError(f"{where}: changed rows can be read only from a SQLite table")
    for raw in _sql_rows(url, dataset, chunk_rows):
        # outside the source's error handling: an error here is not the source's
        yield house_frame(raw, dataset, where, batch_id, extracted_at)


def _sqlite_file(url: str, dataset: Dataset) -> Path | None:
    """The file of a SQLite source that holds ``dataset.raw`` as a table; None for other
    databases (and in-memory SQLite). Missing files and tables are the source's errors."""
    parsed = sa.engine.make_url(url)
    if (
        parsed.get_backend_name() != "sqlite"
        or not parsed.database
        or parsed.database == ":memory:"
    ):
        return None
    path = Path(parsed.database)
    if not path.is_file():
        raise SourceError(
            f"{dataset.system} source {_safe(url)}: database file {parsed.database} not found"
        )
    try:
        with sqlite_arrow.readonly(path) as conn:
            found = conn.execute(
                "SELECT type FROM sqlite_master WHERE name = ? COLLATE NOCASE", (dataset.raw,)
            ).fetchone()
    except sqlite3.Error as error:
        raise SourceError(
            f"{dataset.system} source {_safe(url)}: cannot read table {dataset.raw}: {error}"
        ) from error
    if found is None:
        raise SourceError(f"{dataset.system} source {_safe(url)}: table {dataset.raw} not found")
    return path if found[0] == "table" else None


def _sql_rows(url: str, dataset: Dataset, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """``dataset.raw``'s rows as they come from the driver, ``chunk_rows`` at a time (a
    missing SQLite file is caught before, by :func:`_sqlite_file`)."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        if not inspector.has_table(dataset.raw):
            raise SourceError(
                f"{dataset.system} source {_safe(url)}: table {dataset.raw} not found"
            )
        with engine.connect() as conn:
            # The driver's own cursor: rows go straight into object columns, without the
            # row objects of SQLAlchemy's result or pandas' string conversions.
            table = engine.dialect.identifier_preparer.quote(dataset.raw)
            cursor = conn.connection.driver_connection.cursor()
            try:
                cursor.execute(f"SELECT * FROM {table}")
                names = [d[0] for d in cursor.description]
                while rows := cursor.fetchmany(chunk_rows):
                    yield rows_frame(rows, names)
            finally:
                cursor.close()
    except (sa.exc.OperationalError, sa.exc.DBAPIError) as error:
        raise SourceError(
            f"{dataset.system} source {_safe(url)}: cannot read table {dataset.raw}: {error.orig}"
        ) from error
    finally:
        engine.dispose()


def rows_frame(rows: list[tuple], names: list[str]) -> pd.DataFrame:
    """A driver's row tuples as one object block: the tuples fill a numpy array in C, and
    the frame takes it as it is (a dict of columns is copied column by column)."""
    grid = np.empty((len(rows), len(names)), dtype=object)
    grid[:] = rows
    return pd.DataFrame(grid, columns=names, dtype=object, copy=False)


def _safe(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def detect_encoding(path: Path, block_bytes: int = 1 << 20) -> str:
    """UTF-8 (with or without BOM) if the file decodes as such, else GB18030 (a superset of GBK).

    The file is decoded ``block_bytes`` at a time, so memory stays flat however large the
    export (reading it whole had held the file and its text at once: several times its size).
    """
    where = []  # the first bytes each encoding cannot read, and their line
    for encoding in CSV_ENCODINGS:
        bad = _first_undecodable(path, encoding, block_bytes)
        if bad is None:
            return encoding
        line, data = bad
        name = "UTF-8" if encoding.startswith("utf") else "GB18030"
        where.append(f"{name}: line {line}, bytes {data.hex(' ')}")
    raise SourceError(
        f"file {path}: not UTF-8 and not GBK/GB18030 text (cannot read {'; '.join(where)})"
    )


def _first_undecodable(path: Path, encoding: str, block_bytes: int) -> tuple[int, bytes] | None:
    """(line, bytes) of the first bytes of ``path`` that ``encoding`` cannot decode; None when
    the whole file decodes."""
    decoder = codecs.getincrementaldecoder(encoding)()
    lines = 0  # newlines in the blocks decoded so far
    with path.open("rb") as file:
        while True:
            block = file.read(block_bytes)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as error:
                # error.object: the bytes held back from the last block (part of a character,
                # never a newline), then this block
                seen = error.object
                return lines + seen.count(b"\n", 0, error.start) + 1, seen[error.start : error.end]
            if not block:
                return None
            lines += block.count(b"\n")


def resolve_files(folder: Path, pattern: str, system: str) -> list[Path]:
    """The files a dataset setting names (a file name or a glob), sorted."""
    paths = sorted(Path(p) for p in glob.glob(str(folder / pattern)))
    if not paths:
        raise SourceError(f"{system} source: no file matches {folder / pattern}")
    return paths


def _check_header(columns: list, dataset: Dataset, where: str) -> None:
    """A :class:`SourceError` when a column ``dataset`` reads is named more than once in a
    file's header (spaces around names do not count): which one holds the values is a guess.
    ``columns`` as pandas read them: it renames a repeated name's copies ("金额", "金额.1")."""
    names = [str(n).strip() for n in columns]
    repeated = [n for n in dataset.rename if names.count(n) > 1 or f"{n}.1" in names]
    if repeated:
        raise SourceError(
            f"{dataset.system} source {where}: column(s) {', '.join(repeated)} appear more "
            "than once in the header"
        )


# -- files: what was read of each, so that the next extract can read only what was added ----
FILE_ROWS = 1 << 40  # a file row's position: its file's number times this, plus its row


@dataclass(frozen=True)
class FileState:
    """A source file (its resolved path) as an extract read it: bytes, their SHA-1, data
    rows, encoding (CSV), and whether it ended at the end of a line (so that rows added
    later start a line)."""

    path: str
    size: int
    digest: str
    rows: int
    encoding: str | None
    ends_line: bool


class FileChanged(RuntimeError):
    """A file no longer begins with what was read of it last time."""


# While an extract lands files it sets these. FILE_STARTS: per file (its path), what was
# read of it last time, when the file is expected to hold that and maybe more at its end:
# it is then read from there on (nothing, if it is the same). FILES_READ: per dataset, the
# files read, as they were read (:class:`FileState`).
FILE_STARTS: ContextVar[dict[str, FileState] | None] = ContextVar("FILE_STARTS", default=None)
FILES_READ: ContextVar[dict[str, list[FileState]] | None] = ContextVar("FILES_READ", default=None)


class _Hashing(io.RawIOBase):
    """A binary file read through: every byte read updates ``digest``; ``head`` (a CSV
    header read before) comes first and is not hashed."""

    def __init__(self, file: io.BufferedIOBase, digest: Any, head: bytes = b"") -> None:
        self.file, self.digest, self.head = file, digest, head
        self.size = 0  # bytes of the file read through
        self.last = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.file.read(len(buffer))
        if data:
            self.digest.update(data)
            self.size += len(data)
            self.last = data[-1:]
            buffer[: len(data)] = data
        return len(data)


def _sha1() -> Any:
    return hashlib.sha1(usedforsecurity=False)  # change detection, not security


def _hash_prefix(file: io.BufferedIOBase, size: int, digest: Any) -> None:
    left = size
    while left > 0:
        block = file.read(min(left, 1 << 20))
        if not block:
            break
        digest.update(block)
        left -= len(block)


def read_file(
    path: Path,
    dataset: Dataset,
    batch_id: str,
    extracted_at: datetime,
    chunk_rows: int,
    sheet: str | None = None,
    file_no: int = 0,
) -> Iterator[pd.DataFrame]:
    """Read a CSV or Excel export in chunks of house-named text rows (positions: the
    ``file_no``-th file's rows, :data:`FILE_ROWS`).

    With an entry in :data:`FILE_STARTS` a file that begins with what was read of it last
    time is read from there on (a CSV), or not at all (the same bytes); one that does not
    is :class:`FileChanged`. What was read goes to :data:`FILES_READ`.
    """
    name = str(path.resolve())  # one file, however the setting names it
    before = (FILE_STARTS.get() or {}).get(name)
    files_read = FILES_READ.get()
    read = None if files_read is None else files_read.setdefault(dataset.name, [])
    suffix = path.suffix.lower()
    base = file_no * FILE_ROWS
    if suffix in (".xlsx", ".xlsm", ".xls"):
        data = path.read_bytes()
        digest = _sha1()
        digest.update(data)
        state = FileState(name, len(data), digest.hexdigest(), 0, None, True)
        if before is not None:
            if (state.size, state.digest) != (before.size, before.digest):
                raise FileChanged(f"{dataset.system} source: file {path} changed")
            if read is not None:
                read.append(before)
            return
        try:
            # calamine (Rust) reads a sheet ~10x faster than openpyxl, the same values
            with pd.ExcelFile(io.BytesIO(data), engine="calamine") as book:
                sheets = book.sheet_names
                sheet_name = sheet if sheet in sheets else sheets[0]
                raw = book.parse(sheet_name=sheet_name, dtype=object)
        except (ValueError, OSError, KeyError, CalamineError) as error:
            # CalamineError: not a workbook at all (empty, truncated, a CSV renamed .xlsx)
            raise SourceError(
                f"{dataset.system} source: cannot read Excel file {path}: {error}"
            ) from error
        where = f"file {path} sheet {sheet_name}"
        _check_header(list(raw.columns), dataset, where)
        raw.columns = [str(c).strip() for c in raw.columns]
        row_ids = base + np.arange(len(raw), dtype=np.int64)
        yield house_frame(raw, dataset, where, batch_id, extracted_at, row_ids)
        if read is not None:
            read.append(replace(state, rows=len(raw)))
        return
    if suffix not in (".csv", ".txt"):
        raise SourceError(f"{dataset.system} source: unsupported file type {path}")
    if before is None:
        try:
            encoding = detect_encoding(path)
        except SourceError as error:
            raise SourceError(f"{dataset.system} source: {error}") from error
    else:
        encoding = before.encoding or CSV_ENCODINGS[0]
    with path.open("rb") as file:
        digest, header = _sha1(), b""
        if before is not None:
            header = file.readline()  # parsed again before the rows added since
            file.seek(0)
            _hash_prefix(file, before.size, digest)
            if digest.hexdigest() != before.digest or not before.ends_line:
                raise FileChanged(f"{dataset.system} source: file {path} changed before its end")
            if not file.peek(1):  # the same bytes: nothing to read
                if read is not None:
                    read.append(before)
                return
        hashing = _Hashing(file, digest, header)
        rows = 0 if before is None else before.rows
        for chunk in _csv_chunks(hashing, encoding, chunk_rows, path, dataset, before):
            row_ids = base + rows + np.arange(len(chunk), dtype=np.int64)
            rows += len(chunk)
            yield house_frame(chunk, dataset, f"file {path}", batch_id, extracted_at, row_ids)
    if read is not None:
        size = hashing.size + (0 if before is None else before.size)
        ends_line = hashing.last == b"\n"
        read.append(FileState(name, size, digest.hexdigest(), rows, encoding, ends_line))


def _csv_chunks(
    hashing: _Hashing,
    encoding: str,
    chunk_rows: int,
    path: Path,
    dataset: Dataset,
    before: FileState | None,
) -> Iterator[pd.DataFrame]:
    """The rows of a CSV read through ``hashing``, header checked, columns stripped."""
    try:
        reader = pd.read_csv(
            io.BufferedReader(hashing, 1 << 20),
            encoding=encoding,
            dtype=str,
            keep_default_na=False,
            chunksize=chunk_rows,
        )
        for chunk in reader:  # (a header alone still gives one empty chunk)
            _check_header(list(chunk.columns), dataset, f"file {path}")
            chunk.columns = [str(c).strip() for c in chunk.columns]
            yield chunk
    except UnicodeDecodeError as error:
        if before is None:  # decoded a moment ago: changed while being read
            raise SourceError(f"{dataset.system} source: file {path}: {error}") from error
        raise FileChanged(f"{dataset.system} source: file {path}: {error}") from error
    except pd.errors.EmptyDataError as error:
        raise SourceError(
            f"{dataset.system} source: CSV file {path} is empty (not even a header row)"
        ) from error
    except pd.errors.ParserError as error:
        raise SourceError(
            f"{dataset.system} source: cannot parse CSV file {path}: {error}"
        ) from error
