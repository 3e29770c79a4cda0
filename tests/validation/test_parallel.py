"""Validation on several processes (PostgreSQL) writes exactly what one process writes.

Each dataset is validated in its own worker; a child's parent keys (and invoice dates) are
read from the parent's raw table instead of from the parent's validation in memory. These
tests land the demo sources into a PostgreSQL scratch schema, add rows whose outcome
depends on another dataset, and compare every table the stage writes.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline import warehouse
from pipeline.datasets import DATASETS
from pipeline.settings import Settings
from pipeline.validation import QuarantineThresholdError, raw_key_index, run, worker_count
from tests.validation.conftest import demo_settings, land_raw, make_context
from tests.validation.conftest import execute_sql as _execute

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TABLES = [*(d.staging_table for d in DATASETS.values()), "quarantine", "dq_findings"]


@pytest.fixture()
def pg_landed(demo_sources: Path, tmp_path: Path) -> Iterator[Settings]:
    """Demo sources landed into raw_<dataset> of a fresh PostgreSQL schema."""
    admin = sa.create_engine(POSTGRES_URL)
    schema = f"t_par_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    (tmp_path / "sources").symlink_to(demo_sources / "sources")
    settings = demo_settings(tmp_path)
    settings.warehouse_url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    land_raw(settings)
    yield settings
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


def _cross_dataset_rows(settings: Settings) -> None:
    """Rows whose rule reads another dataset: parents' keys, an invoice's date, a copy."""
    invoice = (
        "(SELECT source_record_id FROM raw_finance_invoices ORDER BY source_record_id LIMIT 1)"
    )
    invoice_date = (
        "(SELECT invoice_date FROM raw_finance_invoices ORDER BY source_record_id LIMIT 1)"
    )
    _execute(
        settings,
        "INSERT INTO raw_sales_customers SELECT * FROM raw_sales_customers LIMIT 1",
        "INSERT INTO raw_sales_orders (source_system, source_record_id, customer_record_id,"
        " order_date, order_status, batch_id, extracted_at) SELECT 'sales', 'O-KNOWN-PARENT',"
        " source_record_id, '2026-08-01', '已完成', batch_id, extracted_at"
        " FROM raw_sales_customers LIMIT 1",
        "INSERT INTO raw_sales_orders (source_system, source_record_id, customer_record_id,"
        " order_date, order_status, batch_id, extracted_at) SELECT 'sales', 'O-NO-PARENT',"
        " 'C-NOBODY', '2026-08-01', '已完成', batch_id, extracted_at"
        " FROM raw_sales_customers LIMIT 1",
        "INSERT INTO raw_finance_payments (source_system, source_record_id, invoice_record_id,"
        " customer_record_id, paid_date, amount_cny, batch_id, extracted_at)"
        f" SELECT 'finance', 'P-ON-TIME', {invoice}, customer_record_id, {invoice_date},"
        " '10', batch_id, extracted_at FROM raw_finance_payments LIMIT 1",
        "INSERT INTO raw_finance_payments (source_system, source_record_id, invoice_record_id,"
        " customer_record_id, paid_date, amount_cny, batch_id, extracted_at)"
        f" SELECT 'finance', 'P-TOO-EARLY', {invoice}, customer_record_id, '2000-01-02',"
        " '10', batch_id, extracted_at FROM raw_finance_payments LIMIT 1",
    )


def _tables(settings: Settings) -> dict[str, pd.DataFrame]:
    """Every table the stage writes, rows in a canonical order (PostgreSQL has no rowid)."""
    engine = sa.create_engine(settings.warehouse_url)
    with engine.connect() as conn:
        tables = {t: pd.read_sql(sa.text(f'SELECT * FROM "{t}"'), conn) for t in TABLES}
    engine.dispose()
    return {
        t: frame.sort_values(list(frame.columns)).reset_index(drop=True)
        for t, frame in tables.items()
    }


def _validate(settings: Settings, workers: int):
    run_settings = settings.model_copy(deep=True)
    run_settings.validation.workers = workers
    ctx = make_context(run_settings)
    try:
        return run(ctx), _tables(run_settings)
    finally:
        ctx.engine.dispose()


def test_parallel_validation_writes_what_one_process_writes(pg_landed: Settings) -> None:
    _cross_dataset_rows(pg_landed)
    # parallel first: its workers find no quarantine table yet and must not race to make it
    parallel_result, parallel = _validate(pg_landed, workers=2)
    serial_result, serial = _validate(pg_landed, workers=1)

    assert serial_result.detail["workers"] == 1
    assert parallel_result.detail["workers"] == 2
    for table in TABLES:
        pd.testing.assert_frame_equal(parallel[table], serial[table], obj=table)
    counts = {k: v for k, v in serial_result.detail.items() if isinstance(v, dict)}
    for name, detail in counts.items():
        got = parallel_result.detail[name]
        assert {k: got[k] for k in ("rows_in", "valid", "quarantined")} == {
            k: detail[k] for k in ("rows_in", "valid", "quarantined")
        }
    quarantine = parallel["quarantine"].set_index(["dataset", "source_record_id"])["defects"]
    staged_orders = set(parallel["stg_sales_orders"]["source_record_id"])
    staged_payments = set(parallel["stg_finance_payments"]["source_record_id"])
    assert "O-KNOWN-PARENT" in staged_orders
    assert quarantine.loc[("sales_orders", "O-NO-PARENT")] == "unknown_customer"
    assert "P-ON-TIME" in staged_payments
    assert quarantine.loc[("finance_payments", "P-TOO-EARLY")] == "payment_before_invoice"
    assert (quarantine.xs("sales_customers", level="dataset") == "duplicate_key").sum() >= 1


def test_a_failing_dataset_in_a_worker_writes_nothing_and_names_itself(
    pg_landed: Settings,
) -> None:
    pg_landed.validation.max_quarantine_share = {"sales_orders": 0.0}
    _execute(
        pg_landed,
        "UPDATE raw_sales_orders SET order_date = 'not a date' WHERE source_record_id IN"
        " (SELECT source_record_id FROM raw_sales_orders ORDER BY source_record_id LIMIT 3)",
    )
    pg_landed.validation.workers = 2
    ctx = make_context(pg_landed)
    with pytest.raises(QuarantineThresholdError, match="dataset sales_orders") as failure:
        run(ctx)
    assert failure.value.datasets == ("sales_orders",)
    assert not warehouse.table_exists(ctx.engine, "stg_sales_orders")  # rolled back
    assert warehouse.table_exists(ctx.engine, "stg_sales_order_lines")  # others written
    ctx.engine.dispose()


def test_a_missing_raw_table_is_named(pg_landed: Settings) -> None:
    _execute(pg_landed, "DROP TABLE raw_service_surveys")
    pg_landed.validation.workers = 2
    ctx = make_context(pg_landed)
    with pytest.raises(LookupError, match="raw_service_surveys"):
        run(ctx)
    ctx.engine.dispose()


def test_parent_keys_from_the_raw_table_match_those_validation_keeps(
    pg_landed: Settings,
) -> None:
    """raw_key_index gives the key index (keys, first invoice dates) validation builds."""
    _cross_dataset_rows(pg_landed)
    pg_landed.validation.workers = 1
    ctx = make_context(pg_landed)
    from pipeline.validation import DatasetValidator, read_raw_chunks

    invoices = DATASETS["finance_invoices"]
    accounts = raw_key_index(ctx.engine, DATASETS["finance_accounts"], 50, "Asia/Shanghai")
    validator = DatasetValidator(
        invoices,
        {"finance_accounts": accounts},
        pg_landed.validation,
        "Asia/Shanghai",
        ctx.extracted_at,
    )
    for chunk in read_raw_chunks(ctx.engine, invoices.name, 50):
        validator.validate(chunk)
    from_raw = raw_key_index(ctx.engine, invoices, 50, "Asia/Shanghai")
    assert from_raw.keys.tolist() == validator.keys.keys.tolist()
    assert from_raw.values.tolist() == validator.keys.values.tolist()
    ctx.engine.dispose()


def test_sqlite_validates_in_one_process(tmp_path: Path) -> None:
    settings = demo_settings(tmp_path)
    settings.validation.workers = 4
    ctx = make_context(settings)
    assert worker_count(ctx) == 1
    ctx.engine.dispose()


def test_threshold_error_keeps_its_datasets_across_processes() -> None:
    error = QuarantineThresholdError("dataset x failed", ("x", "y"))
    back = pickle.loads(pickle.dumps(error))
    assert str(back) == "dataset x failed" and back.datasets == ("x", "y")


def test_text_that_is_not_a_date_lands_on_postgresql_and_is_quarantined(
    pg_landed: Settings, demo_sources: Path, tmp_path: Path
) -> None:
    """Raw tables keep the source's text on PostgreSQL too: a bad date is a quarantined
    row with its reason, not a failed extract; a source table with no rows still lands."""
    import shutil
    import sqlite3

    from pipeline.extract import land_system

    sales = tmp_path / "sales_copy.db"
    shutil.copy(demo_sources / "sources" / "sales.db", sales)
    with sqlite3.connect(sales) as db:
        first, second = [r[0] for r in db.execute("SELECT order_no FROM sales_order LIMIT 2")]
        db.execute("UPDATE sales_order SET order_date='not a date' WHERE order_no=?", (first,))
        db.execute("UPDATE sales_order SET order_date='2026-13-45' WHERE order_no=?", (second,))
        db.execute("DELETE FROM crm_contact")
    pg_landed.sources.sales_url = f"sqlite:///{sales}"
    pg_landed.validation.max_quarantine_share = {"sales_contacts": 1.0}
    pg_landed.validation.min_row_count_ratio = 0.0
    ctx = make_context(pg_landed)
    land_system(ctx, "sales")
    with ctx.engine.connect() as conn:
        raw = dict(
            conn.execute(
                sa.text(
                    "SELECT source_record_id, order_date FROM raw_sales_orders"
                    " WHERE source_record_id IN (:a, :b)"
                ),
                {"a": first, "b": second},
            ).all()
        )
    assert raw == {first: "not a date", second: "2026-13-45"}
    assert warehouse.table_exists(ctx.engine, "raw_sales_contacts")

    result = run(ctx)
    assert result.detail["sales_contacts"]["rows_in"] == 0
    quarantine = warehouse.read_table(ctx.engine, "quarantine")
    reasons = quarantine.set_index("source_record_id")["reasons"]
    assert "order_date: 'not a date' is not a date" in reasons.loc[first]
    assert "order_date: '2026-13-45' is not a date" in reasons.loc[second]
    ctx.engine.dispose()


def test_a_worker_s_error_is_raised_in_the_stage(tmp_path: Path) -> None:
    """A worker process hands its exception back; the stage raises it as it was."""
    from pipeline.quarters import Quarter
    from pipeline.validation import WORKER_PRELOAD, _run_calls
    from pipeline.worker import Started

    request = {
        "url": "sqlite:///" + str(tmp_path / "none.db"),
        "settings": Settings(),
        "quarter": Quarter.parse("2026Q3"),
        "batch_id": "b1",
        "extracted_at": pd.Timestamp("2026-11-23").to_pydatetime(),
        "names": ["no_such_dataset"],
    }
    with pytest.raises(KeyError, match="no_such_dataset"):
        next(_run_calls(Started(tmp_path, "w", WORKER_PRELOAD), [request]))
    # a worker started ahead and given no work ends cleanly
    idle = Started(tmp_path, "idle", WORKER_PRELOAD)
    idle.close()
    assert idle.process.returncode == 0


def test_datasets_are_spread_largest_first_over_the_workers() -> None:
    from pipeline.validation import plan_workers

    sizes = {
        "lines": 9_000_000,
        "orders": 2_400_000,
        "invoices": 2_000_000,
        "payments": 1_900_000,
        "accounts": 75_000,
    }
    assert plan_workers(sizes, 2) == [["lines"], ["orders", "invoices", "payments", "accounts"]]
    assert plan_workers(sizes, 3) == [["lines"], ["orders", "accounts"], ["invoices", "payments"]]
    assert plan_workers({"a": 5}, 4) == [["a"]]
    assert sorted(n for g in plan_workers(sizes, 9) for n in g) == sorted(sizes)
    # A day's changes: each dataset's own cost counts beside its rows, so the largest
    # dataset's worker takes some of the small ones too.
    day = {"lines": 150_000, "orders": 25_000, "invoices": 20_000, "payments": 20_000}
    day |= {"tickets": 16_000, "log": 12_000, "surveys": 8_000, "contacts": 4_500}
    day |= {"customers": 1_000, "accounts": 750}
    assert plan_workers(day, 2) == [
        ["lines", "surveys", "customers"],
        ["orders", "invoices", "payments", "tickets", "log", "contacts", "accounts"],
    ]
    # The findings' three datasets go to one worker, which is given the findings' share
    # less work: the stage works them out while the other worker goes on.
    findings = ("customers", "contacts", "log")
    assert plan_workers(day, 2, findings, 60_000) == [
        ["lines", "invoices", "tickets"],
        ["log", "contacts", "customers", "orders", "payments", "surveys", "accounts"],
    ]


def test_raw_chunks_read_through_arrow_are_the_driver_s_rows(
    pg_landed: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL raw rows are streamed through ADBC (Arrow); the chunks must hold exactly
    the objects a server-side cursor gives (text, None, '' and blanks as they are, the
    lineage timestamp as ``datetime``), numbered and cut at ``chunk_rows`` the same way,
    whatever the Arrow batch sizes; a table of another type falls back to the driver."""
    from pipeline.validation import read_raw_chunks

    _execute(
        pg_landed,
        "UPDATE raw_sales_contacts SET mobile_phone = NULL WHERE source_record_id IN"
        " (SELECT source_record_id FROM raw_sales_contacts ORDER BY source_record_id LIMIT 3)",
        "UPDATE raw_sales_contacts SET email = '  ', title = '' WHERE source_record_id IN"
        " (SELECT source_record_id FROM raw_sales_contacts ORDER BY 1 DESC LIMIT 3)",
        "UPDATE raw_sales_contacts SET extracted_at = NULL WHERE source_record_id ="
        " (SELECT MIN(source_record_id) FROM raw_sales_contacts)",
    )
    engine = warehouse.create_engine(pg_landed.warehouse_url)

    def chunks(name: str, rows: int, **kwargs) -> list[pd.DataFrame]:
        return list(read_raw_chunks(engine, name, rows, **kwargs))

    streamed = warehouse.stream_text_rows
    try:
        for name, rows in [
            ("sales_contacts", 7),
            ("sales_contacts", 100_000),
            ("sales_orders", 64),
        ]:
            arrow = chunks(name, rows)
            assert streamed(engine, f"SELECT * FROM raw_{name}", rows, ["row_hash"]) is not None
            monkeypatch.setattr(warehouse, "stream_text_rows", lambda *a, **k: None)
            driver = chunks(name, rows)
            monkeypatch.setattr(warehouse, "stream_text_rows", streamed)
            assert [len(c) for c in arrow] == [len(c) for c in driver] and len(arrow) >= 1
            for a, d in zip(arrow, driver, strict=True):
                pd.testing.assert_frame_equal(a, d)
                assert [type(v) for v in a.iloc[0]] == [type(v) for v in d.iloc[0]]
        one = chunks("sales_contacts", 10, columns=["source_record_id"])
        assert list(one[0].columns) == ["source_record_id"]
        _execute(pg_landed, "DELETE FROM raw_service_accounts")
        empty = chunks("service_accounts", 10)
        assert len(empty) == 1 and empty[0].empty and "source_record_id" in empty[0].columns
        # a column that is neither text nor a timestamp: the driver reads the table
        assert streamed(engine, "SELECT 1.5 AS x", 10) is None
    finally:
        engine.dispose()


def test_a_full_run_replaces_staged_rows_without_leaving_dead_ones_and_keeps_indexes(
    pg_landed: Settings,
) -> None:
    """A full validation truncates the staging tables (a DELETE left the previous rows in
    the table until a vacuum) and rebuilds their indexes after loading; a dataset that
    fails is rolled back with its indexes and rows as they were."""
    pg_landed.validation.workers = 2
    _, first = _validate(pg_landed, workers=2)
    _execute(
        pg_landed,
        'CREATE INDEX "ix by customer" ON stg_sales_orders (customer_record_id, order_date)',
    )
    engine = sa.create_engine(pg_landed.warehouse_url)
    indexes = (  # this test's schema only: other runs may share the database
        "SELECT indexname, indexdef FROM pg_indexes "
        "WHERE tablename = 'stg_sales_orders' AND schemaname = current_schema()"
    )
    size = "SELECT pg_relation_size('stg_sales_order_lines')"

    def state() -> tuple[set, int]:
        with engine.connect() as conn:
            return set(conn.execute(sa.text(indexes)).all()), conn.execute(sa.text(size)).scalar()

    before, first_size = state()
    assert "ix by customer" in {name for name, _ in before}
    _, second = _validate(pg_landed, workers=2)
    for table in TABLES:
        pd.testing.assert_frame_equal(second[table], first[table], obj=table)
    after, second_size = state()
    assert after == before
    assert second_size == first_size  # not twice the rows

    pg_landed.validation.max_quarantine_share = {"sales_orders": 0.0}
    _execute(pg_landed, "UPDATE raw_sales_orders SET order_date = 'never'")
    with pytest.raises(QuarantineThresholdError):
        _validate(pg_landed, workers=2)
    assert state()[0] == before
    assert _tables(pg_landed)["stg_sales_orders"].equals(second["stg_sales_orders"])
    engine.dispose()
