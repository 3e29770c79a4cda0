"""Incremental ingest: land and validate only what changed, and end where a full run ends.

The demo sources are landed and validated once; then rows are added, changed and removed
at every source (as a day's business would), and the incremental extract + validate must
leave exactly the staged, quarantined and finding rows that a full run on the changed
sources leaves, on SQLite and on the real PostgreSQL, while writing only the changes.
"""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline import warehouse
from pipeline.bench import mutate_sources
from pipeline.datasets import DATASETS
from pipeline.extract import changelog, changes
from pipeline.extract.base import key_hashes, raw_row_hashes
from pipeline.quarters import Quarter
from pipeline.runner import make_context, run_stage
from pipeline.settings import Settings
from tests.conftest import settings_for

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
INGEST = ("extract_sales", "extract_service", "extract_finance", "validate")
LINEAGE = ["batch_id", "extracted_at"]
EXTRACTED_AT = datetime(2026, 11, 23, 2, 0)


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouses(request, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty warehouses of one kind: (incremental, full)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'inc.db'}", f"sqlite:///{tmp_path / 'full.db'}"
        return
    admin = sa.create_engine(POSTGRES_URL)
    schemas = [f"t_inc_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with admin.begin() as conn:
        for schema in schemas:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    yield tuple(f"{POSTGRES_URL}?options=-csearch_path%3D{s}" for s in schemas)
    with admin.begin() as conn:
        for schema in schemas:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


def _sources(demo_sources: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "sources"
    shutil.copytree(demo_sources, copy)
    return copy


def _settings(sources: Path, url: str, out: Path, incremental: bool) -> Settings:
    settings = settings_for(sources, url, out)
    settings.sources.incremental = incremental
    settings.validation.workers = 2
    return settings


def _ingest(settings: Settings, batch: str) -> dict[str, object]:
    ctx = make_context(settings, Quarter(2026, 4), batch, EXTRACTED_AT)
    try:
        return {name: run_stage(ctx, name) for name in INGEST}
    finally:
        ctx.engine.dispose()


def _everyday_changes(sources: Path) -> None:
    """Rows added and changed everywhere (the bench's ~1%, here 5%), and some removed:
    an order with its lines still there (they lose their parent), a customer, an account
    of the service system; and two invoices' numbers used again, one copy before the
    original and one after (duplicates: the first in source order stays valid)."""
    mutate_sources(sources, 0.05, seed=3)
    with sqlite3.connect(sources / "sales.db") as con:
        order = con.execute("SELECT order_no FROM sales_order ORDER BY order_no LIMIT 1").fetchone()
        con.execute("DELETE FROM sales_order WHERE order_no = ?", order)
        con.execute(
            "DELETE FROM crm_customer WHERE cust_no = "
            "(SELECT cust_no FROM crm_customer ORDER BY cust_no DESC LIMIT 1)"
        )
    with sqlite3.connect(sources / "service.db") as con:
        con.execute(
            "DELETE FROM account WHERE account_id = "
            "(SELECT account_id FROM account ORDER BY account_id LIMIT 1 OFFSET 3)"
        )
    invoices = next((sources / "finance").glob("invoices*.csv"))
    raw = invoices.read_bytes()
    encoding = "utf-8-sig" if raw.startswith(b"\xef\xbb\xbf") else "gb18030"
    frame = pd.read_csv(invoices, dtype=str, keep_default_na=False, encoding=encoding)
    copy = frame.iloc[[0, 1]].copy()
    copy.iloc[:, -1] = "1.00"  # a second row under an existing invoice number
    pd.concat([copy.iloc[[0]], frame, copy.iloc[[1]]]).to_csv(
        invoices, index=False, encoding=encoding
    )


def _table(url: str, table: str) -> pd.DataFrame:
    engine = warehouse.create_engine(url)
    try:
        frame = warehouse.read_table(engine, table)
    finally:
        engine.dispose()
    frame = frame.drop(columns=[c for c in LINEAGE if c in frame.columns])
    frame = frame[sorted(frame.columns)].astype(str)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def _pending(url: str) -> int:
    engine = warehouse.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(f'SELECT COUNT(*) FROM "{changes.PENDING}"')).scalar_one()
    finally:
        engine.dispose()


def without_change_log(sources: Path) -> None:
    """Drop the demo databases' change logs (a source that offers none)."""
    for name in ("sales.db", "service.db"):
        with sqlite3.connect(sources / name) as con:
            for (trigger,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
                con.execute(f'DROP TRIGGER "{trigger}"')
            con.execute(f"DROP TABLE {changelog.LOG}")
            con.execute(f"DROP TABLE {changelog.SOURCE}")


# Compared in full on SQLite: the change-log tests' fallbacks (tests/extract/test_change_log.py)
@pytest.mark.parametrize(
    ("warehouses", "change_log"),
    [("sqlite", True), ("postgresql", True), ("postgresql", False)],
    ids=["sqlite-change-log", "postgresql-change-log", "postgresql-compared"],
    indirect=["warehouses"],
)
def test_incremental_ingest_ends_where_a_full_ingest_ends(
    demo_sources: Path, tmp_path: Path, warehouses: tuple[str, str], change_log: bool
) -> None:
    """With a change log the database sources' changes are read by row id; without one
    every row is compared with the landing. Either way the result is a full run's."""
    incremental_url, full_url = warehouses
    sources = _sources(demo_sources, tmp_path)
    if not change_log:
        without_change_log(sources)
    incremental = _settings(sources, incremental_url, tmp_path / "out-inc", incremental=True)
    first = _ingest(incremental, "day-1")
    source_rows = sum(first[f"extract_{s}"].rows_in for s in ("sales", "service", "finance"))

    _everyday_changes(sources)
    second = _ingest(incremental, "day-2")
    full = _settings(sources, full_url, tmp_path / "out-full", incremental=False)
    _ingest(full, "full")

    for table in [*(d.staging_table for d in DATASETS.values()), "quarantine", "dq_findings"]:
        pd.testing.assert_frame_equal(
            _table(incremental_url, table), _table(full_url, table), obj=table
        )
    # only the changes were written and re-checked, and nothing is left pending
    written = sum(second[f"extract_{s}"].rows_out for s in ("sales", "service", "finance"))
    assert 0 < written < 0.2 * source_rows
    checked = {
        name: detail.get("rows_checked")
        for name, detail in second["validate"].detail.items()
        if isinstance(detail, dict)
    }
    assert all(v is not None for v in checked.values()), checked
    assert 0 < sum(checked.values()) < 0.3 * source_rows
    assert _pending(incremental_url) == 0
    # the staged and quarantined counts validate keeps are the tables' own
    engine = warehouse.create_engine(incremental_url)
    with engine.connect() as conn:
        for dataset in DATASETS.values():
            kept = conn.execute(
                sa.text(
                    'SELECT "staged_rows", "quarantined_rows" FROM "validation_state" '
                    'WHERE "dataset" = :d'
                ),
                {"d": dataset.name},
            ).one()
            staged = conn.exec_driver_sql(f'SELECT COUNT(*) FROM "{dataset.staging_table}"')
            quarantined = conn.execute(
                sa.text('SELECT COUNT(*) FROM "quarantine" WHERE "dataset" = :d'),
                {"d": dataset.name},
            )
            assert tuple(kept) == (staged.scalar_one(), quarantined.scalar_one()), dataset.name
    engine.dispose()
    # with a change log the database sources were not read whole
    for system in ("sales", "service"):
        result = second[f"extract_{system}"]
        logged = [d.name for d in DATASETS.values() if d.system == system] if change_log else []
        assert result.detail["change_log"] == sorted(logged)
        read_whole = first[f"extract_{system}"].rows_in
        assert (result.rows_in < 0.2 * read_whole) == change_log


def _finance_file(sources: Path, pattern: str) -> tuple[Path, str, pd.DataFrame]:
    path = next((sources / "finance").glob(pattern))
    encoding = "utf-8-sig" if path.read_bytes().startswith(b"\xef\xbb\xbf") else "gb18030"
    return path, encoding, pd.read_csv(path, dtype=str, keep_default_na=False, encoding=encoding)


def _reach_of(url: str, dataset: str, key: str) -> set[int | None]:
    engine = warehouse.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    f'SELECT "reach" FROM "{changes.PENDING}" '
                    'WHERE "dataset" = :d AND "record_key" = :k'
                ),
                {"d": dataset, "k": key},
            ).fetchall()
    finally:
        engine.dispose()
    return {r[0] for r in rows}


@pytest.mark.parametrize(
    ("warehouses", "orphan_rules"),
    [("sqlite", True), ("postgresql", True), ("sqlite", False)],
    ids=["sqlite", "postgresql", "sqlite-no-orphan-rules"],
    indirect=["warehouses"],
)
def test_a_change_reaches_the_records_referring_to_it(
    demo_sources: Path,
    tmp_path: Path,
    warehouses: tuple[str, str],
    orphan_rules: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Re-checked with their parent: the lines of an order that arrives a day after them
    (orphans until then: found among the quarantined rows, or, when no rule is known to
    quarantine orphans, among all landed rows), the payments of an invoice that arrives
    late and of one whose date changed. Not re-checked: the lines of an order whose
    status changed."""
    if not orphan_rules:
        monkeypatch.setattr("pipeline.validation.orphan_rules", lambda dataset: {})
    incremental_url, full_url = warehouses
    sources = _sources(demo_sources, tmp_path)
    with sqlite3.connect(sources / "sales.db") as con:
        late_order, edited_order = [
            r[0]
            for r in con.execute(
                "SELECT order_no FROM sales_order WHERE order_no IN "
                "(SELECT order_no FROM sales_order_line) ORDER BY order_no LIMIT 2"
            )
        ]
        columns = [r[1] for r in con.execute("PRAGMA table_info(sales_order)")]
        order_row = con.execute(
            "SELECT * FROM sales_order WHERE order_no = ?", (late_order,)
        ).fetchone()
        con.execute("DELETE FROM sales_order WHERE order_no = ?", (late_order,))
    invoices, encoding, frame = _finance_file(sources, "invoices*.csv")
    *_, payments = _finance_file(sources, "payments*.csv")
    paid = frame["发票号"].isin(set(payments["发票号"]))
    late_invoice, moved_invoice = frame[paid].iloc[[0, 1]]["发票号"].tolist()
    late_row = frame[frame["发票号"] == late_invoice]
    frame[frame["发票号"] != late_invoice].to_csv(invoices, index=False, encoding=encoding)

    incremental = _settings(sources, incremental_url, tmp_path / "out-inc", incremental=True)
    _ingest(incremental, "day-1")
    orphans = _table(incremental_url, "quarantine")
    assert (orphans["raw_row"].str.contains(f'"order_record_id": "{late_order}"')).any()

    with sqlite3.connect(sources / "sales.db") as con:
        con.execute(
            f"INSERT INTO sales_order ({', '.join(columns)}) VALUES "
            f"({', '.join('?' * len(columns))})",
            order_row,
        )
        con.execute(
            "UPDATE sales_order SET status = CASE status WHEN '已完成' THEN '已取消' "
            "ELSE '已完成' END WHERE order_no = ?",
            (edited_order,),
        )
    frame = pd.read_csv(invoices, dtype=str, keep_default_na=False, encoding=encoding)
    frame.loc[frame["发票号"] == moved_invoice, "开票日期"] = "2099-01-01"  # after its payments
    pd.concat([frame, late_row]).to_csv(invoices, index=False, encoding=encoding)
    ctx = make_context(incremental, Quarter(2026, 4), "day-2", EXTRACTED_AT)
    try:
        for name in INGEST[:-1]:
            run_stage(ctx, name)
        assert _reach_of(incremental_url, "sales_orders", late_order) == {changes.APPEARED}
        assert _reach_of(incremental_url, "sales_orders", edited_order) == {changes.SAME}
        assert _reach_of(incremental_url, "finance_invoices", late_invoice) == {changes.APPEARED}
        assert _reach_of(incremental_url, "finance_invoices", moved_invoice) == {changes.ANY}
        validated = run_stage(ctx, "validate")
    finally:
        ctx.engine.dispose()
    _ingest(_settings(sources, full_url, tmp_path / "out-full", incremental=False), "full")
    for table in [*(d.staging_table for d in DATASETS.values()), "quarantine"]:
        pd.testing.assert_frame_equal(
            _table(incremental_url, table), _table(full_url, table), obj=table
        )
    lines = _table(incremental_url, "stg_sales_order_lines")
    assert (lines["order_record_id"] == late_order).any()  # orphans no longer
    checked = validated.detail["sales_order_lines"]["rows_checked"]
    with sqlite3.connect(sources / "sales.db") as con:
        key = "COALESCE(TRIM(line_id), '')"
        (of_late,) = con.execute(
            f"SELECT COUNT(*) FROM sales_order_line WHERE {key} IN "
            f"(SELECT {key} FROM sales_order_line WHERE order_no = ?)",
            (late_order,),
        ).fetchone()
    assert checked == of_late  # the edited order's lines were not re-checked


def test_an_unchanged_source_writes_nothing(demo_sources: Path, tmp_path: Path) -> None:
    sources = _sources(demo_sources, tmp_path)
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    settings = _settings(sources, url, tmp_path / "out", incremental=True)
    _ingest(settings, "day-1")
    before = {d.staging_table: _table(url, d.staging_table) for d in DATASETS.values()}
    again = _ingest(settings, "day-2")
    assert all(again[f"extract_{s}"].rows_out == 0 for s in ("sales", "service", "finance"))
    assert (
        sum(d["rows_checked"] for d in again["validate"].detail.values() if isinstance(d, dict))
        == 0
    )
    for table, frame in before.items():
        pd.testing.assert_frame_equal(_table(url, table), frame, obj=table)


def test_changed_rules_revalidate_everything(demo_sources: Path, tmp_path: Path) -> None:
    """Staged rows were judged by the old settings: a new threshold means a full check."""
    sources = _sources(demo_sources, tmp_path)
    settings = _settings(sources, f"sqlite:///{tmp_path / 'wh.db'}", tmp_path / "out", True)
    _ingest(settings, "day-1")
    settings.validation.stale_after_days = 30
    again = _ingest(settings, "day-2")
    details = [d for d in again["validate"].detail.values() if isinstance(d, dict)]
    assert all("rows_checked" not in d for d in details)


def test_a_failed_validation_keeps_its_changes_pending(demo_sources: Path, tmp_path: Path) -> None:
    """Changes a failed validate did not apply are applied by the next one."""
    sources = _sources(demo_sources, tmp_path)
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    settings = _settings(sources, url, tmp_path / "out", incremental=True)
    _ingest(settings, "day-1")
    mutate_sources(sources, 0.05, seed=5)
    settings.validation.max_quarantine_share = {"sales_orders": 0.0}
    with pytest.raises(Exception, match="sales_orders"):
        _ingest(settings, "day-2")
    assert _pending(url) > 0
    settings.validation.max_quarantine_share = {}
    _ingest(settings, "day-3")
    full_url = f"sqlite:///{tmp_path / 'full.db'}"
    _ingest(_settings(sources, full_url, tmp_path / "out-full", incremental=False), "full")
    for table in [*(d.staging_table for d in DATASETS.values()), "quarantine"]:
        pd.testing.assert_frame_equal(_table(url, table), _table(full_url, table), obj=table)


def test_row_hashes_tell_a_missing_value_from_its_text_and_ignore_chunking() -> None:
    rows = [
        ["O1", "C1", 5, None],
        ["O1", "C1", 5, "None"],  # the text "None" is not a missing value
        ["O1", "C1", 5, ""],
        ["O1", "C1", 6, None],
        ["O1", 5, "C1", None],  # values swapped between columns
        ["O2", "C1", 2**60 + 1, None],  # beyond float64's integers: hashed by its digits
        ["O2", "C1", 2**60, None],
    ]
    frame = pd.DataFrame(rows, columns=["key", "customer", "amount", "note"], dtype=object)
    hashes = raw_row_hashes(frame)
    assert len(set(hashes.tolist())) == len(rows)
    # a value's hash does not depend on the other values of its chunk: the amounts above are
    # ints among text and big ints; alone, or among floats, they hash the same
    for part in (frame.iloc[:1], frame.iloc[3:4], frame.iloc[5:]):
        assert raw_row_hashes(part).tolist() == hashes[part.index].tolist()
    floats = frame.iloc[:1].copy()
    floats.loc[0, "amount"] = 5.0  # lands as the same text "5"
    assert raw_row_hashes(floats).tolist() == hashes[:1].tolist()
    # ints beside text (keys: new ones are text, old ones numbers) hash as ints alone do
    mixed = pd.DataFrame({"key": [7, "7-n", None]}, dtype=object)
    alone = pd.DataFrame({"key": [7, None]}, dtype=object)
    assert raw_row_hashes(mixed)[[0, 2]].tolist() == raw_row_hashes(alone).tolist()
    assert key_hashes(np.array([None], dtype=object)) != key_hashes(
        np.array(["None"], dtype=object)
    )


def test_incremental_extracts_side_by_side_on_sqlite(demo_sources: Path, tmp_path: Path) -> None:
    """The ingest DAG runs the three extracts at once. An incremental one reads its landing
    before it writes, so on SQLite it must take the write lock first: two readers that
    both then want to write would fail at once with "database is locked"."""
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    sources = _sources(demo_sources, tmp_path)
    settings = _settings(sources, f"sqlite:///{tmp_path / 'wh.db'}", tmp_path / "out", True)
    _ingest(settings, "day-1")
    mutate_sources(sources, 0.05, seed=9)
    for day in range(2, 5):
        ctx = make_context(settings, Quarter(2026, 4), f"day-{day}", EXTRACTED_AT)
        names = ("extract_sales", "extract_service", "extract_finance")
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(partial(run_stage, ctx), names))
        ctx.engine.dispose()
        assert [r.stage for r in results] == list(names)
