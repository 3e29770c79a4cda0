"""Chunked validation gives exactly the tables one big chunk gives.

The stage reads, checks and writes each dataset ``sources.chunk_rows`` rows at a time and
keeps only cross-row state (keys seen, parents' keys, invoice dates) between chunks; these
tests run it with tiny chunks and with one chunk on the same raw rows and compare every
table it writes.
"""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline import warehouse
from pipeline.datasets import DATASETS
from pipeline.settings import Settings
from pipeline.validation import FINDINGS_INPUTS, run
from pipeline.validation.findings import customer_findings
from pipeline.validation.rules import KeyIndex
from tests.validation.conftest import EXTRACTED_AT, make_context
from tests.validation.conftest import execute_sql as _execute

ONE_CHUNK = 10**9


def _tables(ctx) -> dict[str, pd.DataFrame]:
    """Every table the stage writes, in stored order (SQLite rowid), values as stored."""
    tables = [*(d.staging_table for d in DATASETS.values()), "quarantine", "dq_findings"]
    with ctx.engine.connect() as conn:
        return {
            t: pd.read_sql(sa.text(f'SELECT * FROM "{t}" ORDER BY rowid'), conn) for t in tables
        }


def _validate(settings: Settings, chunk_rows: int) -> tuple[dict[str, pd.DataFrame], dict]:
    run_settings = settings.model_copy(deep=True)
    run_settings.sources.chunk_rows = chunk_rows
    ctx = make_context(run_settings)
    result = run(ctx)
    tables = _tables(ctx)
    ctx.engine.dispose()
    counts = {
        name: {k: v for k, v in d.items() if k != "seconds"}
        for name, d in result.detail.items()
        if isinstance(d, dict)
    }
    return tables, counts


def _raw_value(settings: Settings, sql: str):
    engine = sa.create_engine(settings.warehouse_url)
    with engine.connect() as conn:
        value = conn.exec_driver_sql(sql).scalar_one()
    engine.dispose()
    return value


def _assert_same(chunked: dict[str, pd.DataFrame], whole: dict[str, pd.DataFrame]) -> None:
    assert chunked.keys() == whole.keys()
    for table in whole:
        pd.testing.assert_frame_equal(chunked[table], whole[table], obj=table)


def _cross_chunk_rows(settings: Settings) -> None:
    """Rows whose rule needs a row of another chunk: late copies, late parents, blank keys."""
    last_invoice = "(SELECT MAX(rowid) FROM raw_finance_invoices)"
    invoice_key = (
        f"(SELECT source_record_id FROM raw_finance_invoices WHERE rowid = {last_invoice})"
    )
    invoice_date = f"(SELECT invoice_date FROM raw_finance_invoices WHERE rowid = {last_invoice})"
    last_customer = "(SELECT MAX(rowid) FROM raw_sales_customers)"
    _execute(
        settings,
        # a duplicate key whose first copy is in the first chunk, the later one in the last
        "INSERT INTO raw_sales_customers SELECT * FROM raw_sales_customers WHERE rowid = 1",
        "INSERT INTO raw_sales_order_lines SELECT * FROM raw_sales_order_lines WHERE rowid = 2",
        # a blank key in two chunks is missing_required twice, never duplicate_key
        "UPDATE raw_service_tickets SET source_record_id = ' ' WHERE rowid IN (3, 30)",
        # references to the parent's last row (the parent's last chunk)
        "INSERT INTO raw_sales_orders (source_system, source_record_id, customer_record_id,"
        " order_date, order_status, batch_id, extracted_at) SELECT 'sales', 'O-LATE-PARENT',"
        f" source_record_id, '2026-08-01', '已完成', batch_id, extracted_at"
        f" FROM raw_sales_customers WHERE rowid = {last_customer}",
        "INSERT INTO raw_finance_payments (source_system, source_record_id, invoice_record_id,"
        " customer_record_id, paid_date, amount_cny, batch_id, extracted_at)"
        f" SELECT 'finance', 'P-LATE-OK', {invoice_key}, customer_record_id, {invoice_date},"
        " '10', batch_id, extracted_at FROM raw_finance_payments WHERE rowid = 1",
        "INSERT INTO raw_finance_payments (source_system, source_record_id, invoice_record_id,"
        " customer_record_id, paid_date, amount_cny, batch_id, extracted_at)"
        f" SELECT 'finance', 'P-LATE-EARLY', {invoice_key}, customer_record_id, '2020-01-02',"
        " '10', batch_id, extracted_at FROM raw_finance_payments WHERE rowid = 1",
    )


def test_tiny_chunks_give_the_same_tables_as_one_chunk(landed: Settings) -> None:
    # A slice of every raw table keeps the run short with chunks of 7 rows; references to
    # rows cut away are quarantined, so the thresholds are lifted for this comparison.
    _execute(landed, *(f"DELETE FROM raw_{name} WHERE rowid > 45" for name in DATASETS))
    _cross_chunk_rows(landed)
    landed.validation.default_max_quarantine_share = 1.0
    landed.validation.max_quarantine_share = {}
    landed.validation.min_row_count_ratio = 0.0

    chunked, chunked_counts = _validate(landed, chunk_rows=7)
    whole, whole_counts = _validate(landed, chunk_rows=ONE_CHUNK)

    _assert_same(chunked, whole)
    assert chunked_counts == whole_counts
    quarantine = whole["quarantine"].set_index(["dataset", "source_record_id"])["defects"]
    customer = _raw_value(landed, "SELECT source_record_id FROM raw_sales_customers WHERE rowid=1")
    line = _raw_value(landed, "SELECT source_record_id FROM raw_sales_order_lines WHERE rowid=2")
    assert quarantine.loc[("sales_customers", customer)] == "duplicate_key"
    assert "duplicate_key" in quarantine.loc[("sales_order_lines", line)].split(",")
    assert customer in set(whole["stg_sales_customers"]["source_record_id"])  # first copy stays
    assert "O-LATE-PARENT" in set(whole["stg_sales_orders"]["source_record_id"])
    assert "P-LATE-OK" in set(whole["stg_finance_payments"]["source_record_id"])
    assert quarantine.loc[("finance_payments", "P-LATE-EARLY")] == "payment_before_invoice"
    tickets = whole["quarantine"][whole["quarantine"]["dataset"] == "service_tickets"]
    blank = tickets[tickets["source_record_id"].str.strip() == ""]["defects"].str.split(",")
    assert len(blank) == 2
    assert all("missing_required" in d and "duplicate_key" not in d for d in blank)


def test_demo_sources_in_chunks_give_the_same_tables_as_one_chunk(landed: Settings) -> None:
    _cross_chunk_rows(landed)
    chunked, chunked_counts = _validate(landed, chunk_rows=1_000)
    whole, whole_counts = _validate(landed, chunk_rows=ONE_CHUNK)
    _assert_same(chunked, whole)
    assert chunked_counts == whole_counts
    assert len(whole["quarantine"]) > 100 and len(whole["dq_findings"]) > 20


def test_kept_contact_log_rows_give_the_same_findings_as_all_rows(landed: Settings) -> None:
    """The stage keeps only the contact-log rows findings can flag; nothing else changes."""
    ctx = make_context(landed)
    run(ctx)
    with ctx.engine.connect() as conn:
        staged = {
            name: pd.read_sql(sa.text(f'SELECT * FROM "stg_{name}"'), conn)
            for name in FINDINGS_INPUTS
        }
    for frame in staged.values():
        for column in [c for c in frame.columns if c.endswith("_at")]:
            frame[column] = pd.to_datetime(frame[column])
    log = FINDINGS_INPUTS["service_contact_log"]
    kept = log.keep(staged["service_contact_log"])
    assert 0 < len(kept) < len(staged["service_contact_log"])
    # an incremental run picks the same rows in SQL
    picked = warehouse.read_table(ctx.engine, "stg_service_contact_log", where=log.where)
    assert sorted(picked["source_record_id"]) == sorted(kept["source_record_id"])
    args = (staged["sales_customers"], staged["sales_contacts"])
    pd.testing.assert_frame_equal(
        customer_findings(*args, kept, quarter="2026Q4", as_of=EXTRACTED_AT),
        customer_findings(
            *args, staged["service_contact_log"], quarter="2026Q4", as_of=EXTRACTED_AT
        ),
    )


def test_key_index_is_exact_and_keeps_the_first_value() -> None:
    index = KeyIndex(with_values=True)
    index.add(
        pd.Series(["I2", "I10", None, "I2"], dtype=object),
        pd.Series(pd.to_datetime(["2026-01-02", "2026-01-10", "2026-01-01", "2026-05-05"])),
    )
    index.add(  # a longer key, a known key again, a non-ASCII key
        pd.Series(["I100000000000", "I10", "发票1"], dtype=object),
        pd.Series(pd.to_datetime(["2026-02-01", "2026-09-09", "2026-03-03"])),
    )
    assert len(index) == 4
    probe = pd.Series(
        ["I2", "I1", "I10", "I100000000000", "I1000", None, "发票1", ""], dtype=object
    )
    assert index.contains(probe).tolist() == [True, False, True, True, False, False, True, False]
    dates = index.lookup(probe)
    assert dates.iloc[0] == pd.Timestamp("2026-01-02")  # the first row's value, not a later copy
    assert dates.iloc[2] == pd.Timestamp("2026-01-10")
    assert dates.iloc[3] == pd.Timestamp("2026-02-01")
    assert dates.iloc[6] == pd.Timestamp("2026-03-03")
    assert dates.isna().tolist() == [False, True, False, False, True, True, False, True]
    with pytest.raises(TypeError, match="keeps no values"):
        KeyIndex.of(probe.dropna()).lookup(probe)


def test_key_index_keeps_a_very_long_key_without_widening_every_key() -> None:
    # The keys sat in one fixed-width array as wide as the longest key: one 1 MB key
    # (a pasted document in an id column) made every key of the dataset take 1 MB, and the
    # chunk's keys as much again (gigabytes for a few thousand rows).
    long_key = "发票" * (1 << 19)  # 3 MB of UTF-8
    index = KeyIndex(with_values=True)
    index.add(
        pd.Series(["I1", long_key, "I2", long_key], dtype=object),
        pd.Series(pd.to_datetime(["2026-01-01", "2026-02-02", "2026-03-03", "2026-09-09"])),
    )
    assert len(index) == 3
    assert index.keys.itemsize <= 256
    probe = pd.Series([long_key, long_key + "x", "I2", None, "I3"], dtype=object)
    assert index.contains(probe).tolist() == [True, False, True, False, False]
    dates = index.lookup(probe)
    assert dates.iloc[0] == pd.Timestamp("2026-02-02")  # the first row's value
    assert dates.iloc[2] == pd.Timestamp("2026-03-03")
    assert dates.isna().tolist() == [False, True, False, True, True]
    plain = KeyIndex.of(pd.Series(["K1", "K2"], dtype=object))
    assert plain.contains(pd.Series([long_key, "K2"], dtype=object)).tolist() == [False, True]
    assert plain.keys.itemsize == 2  # a long key looked up does not widen the kept keys
