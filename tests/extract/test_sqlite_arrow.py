"""SQLite sources read into Arrow land the same text as the driver's-cursor path."""

from __future__ import annotations

import math
import sqlite3
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.datasets import DATASETS
from pipeline.extract import sqlite_arrow
from pipeline.extract.base import SourceError, _sql_rows, _text_column, house_frame, read_sql_table

EXTRACTED_AT = datetime(2026, 11, 23, 1, 0, 0)
LINES = DATASETS["sales_order_lines"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=40))
def test_float_text_matches_the_object_path(values):
    array = np.array(values, dtype=np.float64)
    expected = list(_text_column(pd.Series(array, dtype="float64")))
    assert sqlite_arrow.float_text(array).to_pylist() == expected


def test_float_text_at_the_edges():
    values = [0.1, 0.30000000000000004, 1e-05, 1e-4, 2.5e-07, 1e16, 1e22, 2.0**62, 2.0**63, -0.0]
    values += [math.inf, -math.inf, 123456789.123, 1234.5, 5.0, -7.0, 9.999999999999999e15]
    array = np.array(values)
    expected = list(_text_column(pd.Series(array, dtype="float64")))
    assert sqlite_arrow.float_text(array).to_pylist() == expected
    assert expected[:4] == ["0.1", "0.30000000000000004", "1e-05", "0.0001"]


def _source(path: Path, rows: list[tuple], declared: str = "") -> str:
    """A sales database whose order-line table holds ``rows`` (line_id first)."""
    columns = [LINES.key_raw, *(c.raw for c in LINES.columns)]
    types = dict.fromkeys(columns, declared)
    with sqlite3.connect(path) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {LINES.raw}")
        conn.execute(f"CREATE TABLE {LINES.raw} ({', '.join(f'{c} {types[c]}' for c in columns)})")
        conn.executemany(
            f"INSERT INTO {LINES.raw} VALUES ({', '.join('?' for _ in columns)})", rows
        )
    conn.close()
    return f"sqlite:///{path}"


def _arrow_frame(url: str, chunk_rows: int) -> pd.DataFrame:
    chunks = list(read_sql_table(url, LINES, "b1", EXTRACTED_AT, chunk_rows))
    return pd.concat(chunks, ignore_index=True)


def _cursor_frame(url: str, chunk_rows: int) -> pd.DataFrame:
    chunks = [
        house_frame(raw, LINES, "t", "b1", EXTRACTED_AT)
        for raw in _sql_rows(url, LINES, chunk_rows)
    ]
    return pd.concat(chunks, ignore_index=True)


def _values(frame: pd.DataFrame) -> list[list]:
    """Every value but the hash, missing ones as None."""
    values = frame.drop(columns=["row_hash"]).astype(object)
    return values.where(values.notna(), None).to_numpy().tolist()


def _line(i: int, amount: object = 10.5, quantity: object = 2) -> tuple:
    return (i, f" SO{i % 7} ", "P-1", "产品", quantity, amount, None)


HOSTILE = [
    _line(1),
    _line(2, amount=0.30000000000000004),
    _line(3, amount=1e-05, quantity="  "),
    _line(4, amount=2.0**63),
    _line(5, amount="n/a"),  # text in a numeric column
    _line(6, amount=7),  # an integer beside reals
    _line(7, quantity=3.0),
    (None, None, "\t", "", None, None, None),
    _line(9, amount=b"\x00\x01"),  # a blob
    _line(10, amount=-0.0),
    _line(1),  # a duplicate key, after its original
]


@pytest.mark.parametrize("declared", ["", "NUMERIC", "TEXT"])
@pytest.mark.parametrize("chunk_rows", [1, 3, 1000])
def test_hostile_values_land_as_through_the_cursor(tmp_path, declared, chunk_rows):
    url = _source(tmp_path / "sales.db", HOSTILE, declared)
    arrow = _arrow_frame(url, chunk_rows)
    assert _values(arrow) == _values(_cursor_frame(url, chunk_rows))
    assert len(arrow) == len(HOSTILE)


def test_long_typed_table_lands_as_through_the_cursor(tmp_path):
    rows = [_line(i, amount=i / 8 + 0.01, quantity=i % 5) for i in range(5000)]
    url = _source(tmp_path / "sales.db", rows, "REAL")
    assert _values(_arrow_frame(url, 700)) == _values(_cursor_frame(url, 700))


def test_a_row_hashes_the_same_however_it_was_read(tmp_path):
    """Rows after a value of another type are read through sqlite3; their hashes are the
    hashes of the same rows read into Arrow, so they do not look changed next time."""
    rows = [_line(i) for i in range(50)]
    typed = _arrow_frame(_source(tmp_path / "typed.db", rows), 10)
    # the same rows with a text quantity in the middle: from row 30 on, read by sqlite3
    mixed_rows = [*rows[:30], _line(30, quantity="many"), *rows[31:]]
    mixed = _arrow_frame(_source(tmp_path / "mixed.db", mixed_rows), 10)
    same = [i for i in range(50) if i != 30]
    assert mixed["row_hash"][same].tolist() == typed["row_hash"][same].tolist()
    assert mixed["row_hash"][30] != typed["row_hash"][30]
    assert mixed["quantity"][30] == "many"
    # and the hash depends on each value and its column
    assert typed["row_hash"].nunique() == 50


def test_views_and_tables_without_row_ids_are_read_through_the_cursor(tmp_path):
    path = tmp_path / "sales.db"
    url = _source(path, HOSTILE)
    expected = _values(_cursor_frame(url, 4))
    with sqlite3.connect(path) as conn:
        conn.execute(f"ALTER TABLE {LINES.raw} RENAME TO lines_base")
        conn.execute(f"CREATE VIEW {LINES.raw} AS SELECT * FROM lines_base")
    conn.close()
    assert _values(_arrow_frame(url, 4)) == expected
    path.unlink()
    columns = [LINES.key_raw, *(c.raw for c in LINES.columns)]
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"CREATE TABLE {LINES.raw} ({', '.join(columns)}, PRIMARY KEY ({columns[0]})) "
            "WITHOUT ROWID"
        )
        conn.execute(f"INSERT INTO {LINES.raw} VALUES (1, 'SO1', 'P', 'n', 1, 2.5, NULL)")
    conn.close()
    frame = _arrow_frame(url, 4)
    assert frame["amount_cny"].tolist() == ["2.5"]


def test_text_that_is_not_utf8_names_the_column(tmp_path):
    path = tmp_path / "sales.db"
    url = _source(path, [_line(1)])
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"INSERT INTO {LINES.raw} VALUES (2, CAST(X'C0FF' AS TEXT), 'P', 'n', 1, 2.5, NULL)"
        )
    conn.close()
    with pytest.raises(SourceError, match="order_no"):
        _arrow_frame(url, 100)


def test_text_that_is_not_utf8_names_the_row(tmp_path):
    # The error named the rows of the whole chunk ("in the 1244 rows after row id None").
    path = tmp_path / "sales.db"
    url = _source(path, [_line(i) for i in range(1, 8)])
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"UPDATE {LINES.raw} SET product_name = CAST(X'C4E3BA' AS TEXT) WHERE rowid = 5"
        )
    conn.close()
    for chunk_rows in (3, 100):
        with pytest.raises(SourceError, match=r"column product_name .* not UTF-8 \(row id 5\)"):
            _arrow_frame(url, chunk_rows)


def test_missing_column_and_table_name_the_source(tmp_path):
    path = tmp_path / "sales.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE {LINES.raw} (line_id, order_no)")
    conn.close()
    with pytest.raises(SourceError, match=r"column\(s\) .*product_code.* missing"):
        _arrow_frame(f"sqlite:///{path}", 100)
    other = DATASETS["sales_customers"]
    with pytest.raises(SourceError, match=f"table {other.raw} not found"):
        list(read_sql_table(f"sqlite:///{path}", other, "b1", EXTRACTED_AT, 100))


def test_read_ahead_keeps_order_raises_where_the_reader_failed_and_stops_when_closed():
    import threading

    from pipeline.readahead import read_ahead

    def reader(fail_at: int | None):
        for i in range(10):
            if i == fail_at:
                raise OSError("[SQLite] Type mismatch in column 3")
            yield i

    assert list(read_ahead(reader(None))) == list(range(10))
    got = []
    with pytest.raises(OSError, match="column 3"):
        for i in read_ahead(reader(6)):
            got.append(i)
    assert got == [0, 1, 2, 3, 4, 5]
    ahead = read_ahead(reader(None), depth=1)
    assert next(ahead) == 0
    ahead.close()  # the consumer stops early: the reading thread ends too
    assert not any(t.name == "read-ahead" for t in threading.enumerate())


def test_a_column_named_rowid_does_not_hide_the_row_id(tmp_path):
    path = tmp_path / "sales.db"
    columns = [LINES.key_raw, *(c.raw for c in LINES.columns)]
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE {LINES.raw} ({', '.join(columns)}, rowid TEXT)")
        conn.executemany(
            f"INSERT INTO {LINES.raw} VALUES ({', '.join('?' for _ in columns)}, ?)",
            [(*_line(i), f"r{9 - i}") for i in range(9)],
        )
    conn.close()
    url = f"sqlite:///{path}"
    assert sqlite_arrow.rowid(path, LINES.raw, sqlite_arrow.table_columns(path, LINES.raw)) == (
        "_rowid_"
    )
    frame = _arrow_frame(url, 4)
    assert frame["source_record_id"].tolist() == [str(i) for i in range(9)]  # insertion order
    assert _values(frame) == _values(_cursor_frame(url, 4))
