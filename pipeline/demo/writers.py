"""Write demo tables as the source systems hold them: SQLite, GBK CSV and Excel.

Tables arrive as columns of codes (see ``pipeline.demo.activity``); each raw column
has a ``Column`` spec that says how its values are rendered. Rendering and writing
happen chunk by chunk, so memory stays flat however large the table.
"""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from openpyxl import Workbook

CHUNK_ROWS = 250_000


@dataclass(frozen=True)
class Key:
    """Integer key written as text: prefix + zero-padded number (-1 = blank)."""

    prefix: str
    width: int


@dataclass(frozen=True)
class Lookup:
    """Vocabulary index written as its label (-1 = NULL, -2 = empty string)."""

    labels: tuple[str, ...]


@dataclass(frozen=True)
class Column:
    """One raw column: name, SQLite type, rendering and the source column it reads."""

    name: str
    sql_type: str
    render: Key | Lookup | str  # or "text", "int", "money", "timestamp", "date"
    source: str | None = None

    @property
    def source_name(self) -> str:
        return self.source or self.name


def _blank_mask(values: np.ndarray) -> np.ndarray:
    return np.asarray(pd.isna(values), dtype=bool)


def _money_text(values: np.ndarray) -> np.ndarray:
    """Amounts (NaN = blank) as text with exactly two decimals, vectorized."""
    blank = np.isnan(values)
    amounts = np.where(blank, 0.0, values)
    cents = np.round(np.abs(amounts) * 100).astype(np.int64)
    text = np.strings.add(
        np.strings.add((cents // 100).astype(str), "."),
        np.strings.zfill((cents % 100).astype(str), 2),
    )
    text = np.where(amounts < 0, np.strings.add("-", text), text).astype(object)
    text[blank] = ""
    return text


def render(
    values: np.ndarray | pd.Series, how: Key | Lookup | str, for_csv: bool = False
) -> np.ndarray:
    """Render one column chunk as an object array of Python values (None = NULL).

    ``for_csv`` writes money as text with exactly two decimals (blank = "").
    """
    if len(values) == 0:
        # NumPy's string functions (zfill) fail on empty arrays; a tiny demo has empty chunks.
        return np.empty(0, dtype=object)
    if isinstance(how, Key):
        numbers = np.asarray(values, dtype=np.int64)
        text = np.strings.add(how.prefix, np.strings.zfill(numbers.astype(str), how.width))
        out = text.astype(object)
        out[numbers < 0] = None
        return out
    if isinstance(how, Lookup):
        codes = np.asarray(values, dtype=np.int64)
        labels = np.array((*how.labels, "", None), dtype=object)
        return labels[
            np.where(codes == -2, len(how.labels), np.where(codes < 0, len(how.labels) + 1, codes))
        ]
    if how in ("timestamp", "date"):
        unit = "s" if how == "timestamp" else "D"
        stamps = np.asarray(values, dtype=f"datetime64[{unit}]")
        text = np.strings.replace(np.datetime_as_string(stamps, unit=unit), "T", " ").astype(object)
        text[np.isnat(stamps)] = None
        return text
    if how == "money" and for_csv:
        return _money_text(np.asarray(values, dtype=float))
    if how == "money":
        amounts = np.asarray(values, dtype=float)
        out = np.round(amounts, 2).astype(object)
        out[np.isnan(amounts)] = None
        return out
    if how == "int":
        return np.asarray(values, dtype=np.int64).astype(object)
    out = np.asarray(values, dtype=object).copy()
    out[_blank_mask(out)] = None
    return out


def _row_count(table: Mapping[str, np.ndarray] | pd.DataFrame) -> int:
    return len(table) if isinstance(table, pd.DataFrame) else len(next(iter(table.values())))


def _chunks(
    table: Mapping[str, np.ndarray] | pd.DataFrame,
    columns: list[Column],
    chunk_rows: int,
    for_csv: bool = False,
) -> Iterator[list[np.ndarray]]:
    rows = _row_count(table)
    for start in range(0, rows, chunk_rows):
        stop = min(start + chunk_rows, rows)
        yield [
            render(np.asarray(table[c.source_name])[start:stop], c.render, for_csv) for c in columns
        ]


def write_sqlite(
    path: Path,
    tables: list[tuple[str, list[Column], Mapping[str, np.ndarray] | pd.DataFrame]],
    chunk_rows: int = CHUNK_ROWS,
) -> None:
    """Create ``path`` afresh holding the given tables, in one transaction."""
    path.unlink(missing_ok=True)
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=OFF")
        connection.execute("PRAGMA synchronous=OFF")
        with connection:
            for name, columns, table in tables:
                ddl = ", ".join(f'"{c.name}" {c.sql_type}' for c in columns)
                connection.execute(f'CREATE TABLE "{name}" ({ddl})')
                marks = ", ".join("?" for _ in columns)
                for chunk in _chunks(table, columns, chunk_rows):
                    connection.executemany(
                        f'INSERT INTO "{name}" VALUES ({marks})',
                        zip(*(c.tolist() for c in chunk), strict=True),
                    )
    finally:
        connection.close()


def write_csv(
    path: Path,
    columns: list[Column],
    table: Mapping[str, np.ndarray] | pd.DataFrame,
    encoding: str = "gbk",
    chunk_rows: int = CHUNK_ROWS,
) -> None:
    """Write a finance export as CSV in ``encoding``; money always with two decimals."""
    with path.open("w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow([c.name for c in columns])
        for chunk in _chunks(table, columns, chunk_rows, for_csv=True):
            writer.writerows(zip(*(values.tolist() for values in chunk), strict=True))


def write_xlsx(
    path: Path, sheet: str, columns: list[Column], table: pd.DataFrame, as_of: date
) -> None:
    """Write a finance workbook with one sheet; dates are real date cells."""
    workbook = Workbook(write_only=True)
    workbook.properties.creator = "finance"
    stamp = datetime(as_of.year, as_of.month, as_of.day)
    workbook.properties.created = stamp
    workbook.properties.modified = stamp
    worksheet = workbook.create_sheet(sheet)
    worksheet.append([c.name for c in columns])
    for chunk in _chunks(table, columns, CHUNK_ROWS):
        cells = []
        for column, values in zip(columns, chunk, strict=True):
            if column.render == "date":
                values = np.array(
                    [None if v is None else date.fromisoformat(v) for v in values.tolist()],
                    dtype=object,
                )
            cells.append(values.tolist())
        for row in zip(*cells, strict=True):
            worksheet.append(list(row))
    workbook.save(path)
