"""Change capture: at a SQLite source, what the triggers log, and what the extract does when
the log cannot be trusted (changes made without it, row ids renumbered, a new database); at
file exports, rows added at the end are read alone, and anything else means a comparison."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from pipeline.bench import mutate_sources
from pipeline.datasets import DATASETS
from pipeline.extract import changelog
from tests.extract.test_incremental import _ingest, _settings, _table


def test_the_triggers_log_inserts_updates_and_deletes_by_row_id(tmp_path: Path) -> None:
    db = tmp_path / "source.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE orders (order_no TEXT, amount REAL)")
        con.executemany("INSERT INTO orders VALUES (?, ?)", [("A", 1.0), ("B", 2.0)])
        con.execute("CREATE TABLE notes (note TEXT)")
    source_id = changelog.install(db, ["orders"])
    assert changelog.install(db, ["orders"]) == source_id  # again: nothing changes
    before = changelog.snapshot(db, ["orders", "notes"], ["orders"])
    assert before.source_id == source_id
    assert before.tracked == {"orders"}  # only tables asked for are tracked
    assert before.shapes == {"orders": (2, 2)}
    with sqlite3.connect(db) as con:
        con.execute("INSERT INTO orders VALUES ('C', 3.0)")  # row id 3
        con.execute("UPDATE orders SET amount = 5 WHERE order_no = 'A'")  # row id 1
        con.execute("UPDATE orders SET rowid = 10 WHERE order_no = 'B'")  # 2 -> 10
        con.execute("DELETE FROM orders WHERE order_no = 'C'")  # 3 again
        con.execute("INSERT INTO notes VALUES ('not tracked')")
    after = changelog.snapshot(db, ["orders"], ["orders"])
    assert after.seq == before.seq + 5
    assert sorted(changelog.changed_rows(db, "orders", before.seq, after.seq)) == [1, 2, 3, 10]
    assert changelog.changed_rows(db, "orders", after.seq, after.seq) == []
    assert after.shapes == {"orders": (2, 10)}


def _ingested(demo_sources: Path, tmp_path: Path):
    sources = tmp_path / "sources"
    shutil.copytree(demo_sources, sources)
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    settings = _settings(sources, url, tmp_path / "out", incremental=True)
    _ingest(settings, "day-1")
    return sources, settings, url


def _same_as_a_full_run(sources: Path, url: str, tmp_path: Path, **source_settings) -> None:
    full_url = f"sqlite:///{tmp_path / 'full.db'}"
    full = _settings(sources, full_url, tmp_path / "out-full", incremental=False)
    for name, value in source_settings.items():
        setattr(full.sources, name, value)
    _ingest(full, "full")
    for table in [*(d.staging_table for d in DATASETS.values()), "quarantine"]:
        pd.testing.assert_frame_equal(_table(url, table), _table(full_url, table), obj=table)


def test_changes_made_while_a_trigger_was_missing_are_found(
    demo_sources: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sources, settings, url = _ingested(demo_sources, tmp_path)
    with sqlite3.connect(sources / "sales.db") as con:
        con.execute(f'DROP TRIGGER "{changelog.trigger_name("sales_order_line", "delete")}"')
        con.execute("DELETE FROM sales_order_line WHERE rowid % 7 = 0")  # not logged
    changelog.install(sources / "sales.db", ["sales_order_line"])  # the trigger is back
    mutate_sources(sources, 0.02, seed=4)  # logged
    second = _ingest(settings, "day-2")
    assert second["extract_sales"].detail["change_log"] == []  # compared in full instead
    assert "after applying its change log" in caplog.text
    assert second["extract_service"].detail["change_log"] != []  # its log was fine
    _same_as_a_full_run(sources, url, tmp_path)
    # and from there the log is used again
    mutate_sources(sources, 0.02, seed=5)
    third = _ingest(settings, "day-3")
    assert len(third["extract_sales"].detail["change_log"]) == 4
    _same_as_a_full_run(sources, url, tmp_path / "again")


def test_row_ids_renumbered_by_vacuum_are_found(demo_sources: Path, tmp_path: Path) -> None:
    """VACUUM renumbers the rows of a table without an INTEGER PRIMARY KEY, unlogged."""
    sources, settings, url = _ingested(demo_sources, tmp_path)
    with sqlite3.connect(sources / "service.db") as con:
        con.execute("DELETE FROM ticket WHERE rowid % 50 = 0")  # logged: gaps in the row ids
    con = sqlite3.connect(sources / "service.db")
    con.execute("VACUUM")
    con.close()
    second = _ingest(settings, "day-2")
    assert second["extract_service"].detail["change_log"] == []
    _same_as_a_full_run(sources, url, tmp_path)


def test_a_database_created_anew_is_compared_in_full(demo_sources: Path, tmp_path: Path) -> None:
    """A new database's log counts from 1 again: another log id, so its positions mean
    nothing to the landing."""
    sources, settings, url = _ingested(demo_sources, tmp_path)
    mutate_sources(sources, 0.02, seed=6)
    with sqlite3.connect(sources / "sales.db") as con:
        con.execute(f"DELETE FROM {changelog.LOG}")
        con.execute(f"UPDATE {changelog.SOURCE} SET source_id = 'another'")
    second = _ingest(settings, "day-2")
    assert second["extract_sales"].detail["change_log"] == []
    _same_as_a_full_run(sources, url, tmp_path)


def _finance(result) -> tuple[list[str], dict[str, int]]:
    return result.detail["change_log"], result.detail["rows"]


def test_rows_added_at_the_end_of_an_export_are_read_alone(
    demo_sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources, settings, url = _ingested(demo_sources, tmp_path)
    monkeypatch.chdir(tmp_path)  # the same files, named another way, are the same files
    settings.sources.finance_dir = Path("sources") / "finance"
    payments = sources / "finance" / "payments.csv"
    size = payments.stat().st_size
    added = mutate_sources(sources, 0.02, seed=7)  # appends to the CSVs as an export does
    assert payments.read_bytes()[size - 2 : size] == b"\r\n"  # the old bytes stay
    second = _ingest(settings, "day-2")
    logged, rows = _finance(second["extract_finance"])
    assert logged == ["finance_accounts", "finance_invoices", "finance_payments"]
    assert rows["finance_accounts"] == 0  # the workbook is the same: not read
    assert 0 < rows["finance_invoices"] + rows["finance_payments"] < added
    _same_as_a_full_run(sources, url, tmp_path)
    third = _ingest(settings, "day-3")  # nothing new
    assert sum(_finance(third["extract_finance"])[1].values()) == 0


def test_a_new_monthly_file_is_read_alone(demo_sources: Path, tmp_path: Path) -> None:
    sources, settings, url = _ingested(demo_sources, tmp_path)
    settings.sources.finance_invoices_file = "invoices*.csv"
    invoices = sources / "finance" / "invoices.csv"
    lines = invoices.read_bytes().split(b"\r\n")
    month = [lines[0], *(line.replace(b",", b"-m,", 1) for line in lines[1:6]), b""]
    (sources / "finance" / "invoices_202612.csv").write_bytes(b"\r\n".join(month))
    second = _ingest(settings, "day-2")
    logged, rows = _finance(second["extract_finance"])
    assert "finance_invoices" in logged
    assert rows["finance_invoices"] == 5
    _same_as_a_full_run(sources, url, tmp_path, finance_invoices_file="invoices*.csv")


def test_an_export_changed_before_its_end_is_compared_in_full(
    demo_sources: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sources, settings, url = _ingested(demo_sources, tmp_path)
    payments = sources / "finance" / "payments.csv"
    data = payments.read_bytes()
    middle = data.index(b"\r\n", len(data) // 2) + 2
    line_end = data.index(b"\r\n", middle)
    line = data[middle:line_end]
    changed = line[:-1] + (b"7" if line[-1:] != b"7" else b"8")  # the last digit of an amount
    payments.write_bytes(
        data[:middle] + changed + data[line_end:] + data[middle:line_end] + b"\r\n"
    )
    second = _ingest(settings, "day-2")
    assert _finance(second["extract_finance"])[0] == []
    assert "changed before its end" in caplog.text
    _same_as_a_full_run(sources, url, tmp_path)
