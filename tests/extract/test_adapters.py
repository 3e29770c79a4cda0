from __future__ import annotations

import shutil
import sqlite3
import uuid
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline.datasets import DATASETS
from pipeline.extract import finance, land_system, sales, service
from pipeline.extract.base import SourceError, detect_encoding, read_file
from pipeline.quarters import Quarter
from pipeline.runner import make_context, run_stage
from pipeline.warehouse import read_table
from tests.conftest import settings_for

EXTRACTED_AT = datetime(2026, 11, 23, 1, 0, 0)


def _collect(adapter, settings) -> dict[str, pd.DataFrame]:
    frames: dict[str, list[pd.DataFrame]] = {}
    for name, chunk in adapter(settings, "b1", EXTRACTED_AT):
        frames.setdefault(name, []).append(chunk)
    return {name: pd.concat(parts, ignore_index=True) for name, parts in frames.items()}


@pytest.mark.parametrize(
    "adapter, system",
    [(sales.extract, "sales"), (service.extract, "service"), (finance.extract, "finance")],
)
def test_adapters_rename_to_house_names_and_add_lineage(demo_settings, adapter, system):
    frames = _collect(adapter, demo_settings)
    expected = {d.name for d in DATASETS.values() if d.system == system}
    assert set(frames) == expected
    for name, frame in frames.items():
        dataset = DATASETS[name]
        assert list(frame.columns) == [
            "source_system",
            *dataset.house_columns,
            "batch_id",
            "extracted_at",
            "row_hash",
        ]
        assert (frame["source_system"] == system).all()
        assert (frame["batch_id"] == "b1").all()
        assert frame["source_record_id"].notna().all()
        # Raw values stay text: nothing is interpreted (or lost) before validation.
        values = frame.drop(columns=["extracted_at", "row_hash"]).to_numpy(dtype=object).ravel()
        assert {type(v) for v in values if not pd.isna(v)} <= {str}


def test_finance_reads_gbk_csv_and_excel(demo_settings, demo_sources):
    assert detect_encoding(demo_sources / "finance" / "invoices.csv") == "gb18030"
    frames = _collect(finance.extract, demo_settings)
    accounts = frames["finance_accounts"]
    assert accounts["customer_name"].str.contains("公司").mean() > 0.9
    invoices = frames["finance_invoices"]
    assert pd.to_datetime(invoices["invoice_date"], errors="coerce").notna().mean() > 0.95


def test_encoding_is_detected_block_by_block_as_on_the_whole_file(tmp_path):
    # A character split across blocks is one character; the first unreadable bytes and
    # their line are those of the whole file, whatever the block size.
    text = "收款单号,金额\n甲公司,100\n" * 3
    bad = text.encode("gbk") + "乙公司\n".encode() + b"\xff\x80 tail\n"
    whole = []  # what decoding the whole file at once finds
    for encoding, label in (("utf-8-sig", "UTF-8"), ("gb18030", "GB18030")):
        with pytest.raises(UnicodeDecodeError) as error:
            bad.decode(encoding)
        at, end = error.value.start, error.value.end
        line = bad.count(b"\n", 0, at) + 1
        whole.append(f"{label}: line {line}, bytes {bad[at:end].hex(' ')}")
    assert whole[0] == "UTF-8: line 1, bytes ca" and whole[1].startswith("GB18030: line 7")
    cases = {
        "utf8.csv": (text.encode("utf-8"), "utf-8-sig"),
        "gbk.csv": (text.encode("gbk"), "gb18030"),
        "bad.csv": (bad, None),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for block in (1, 2, 3, 5, 1 << 20):
            if expected:
                assert detect_encoding(path, block) == expected, (name, block)
            else:
                with pytest.raises(SourceError) as error:
                    detect_encoding(path, block)
                assert f"(cannot read {'; '.join(whole)})" in str(error.value), block


def test_csv_encodings_detected(tmp_path):
    dataset = DATASETS["finance_payments"]
    header = "收款单号,发票号,客户编号,收款日期,金额(元)\n"
    row = "P1,INV1,F1,2026-01-05,100.50\n"
    for encoding, expected in (
        ("utf-8", "utf-8-sig"),
        ("utf-8-sig", "utf-8-sig"),
        ("gbk", "gb18030"),
    ):
        path = tmp_path / f"payments-{encoding}.csv"
        path.write_bytes((header + row).encode(encoding))
        assert detect_encoding(path) == expected
        (frame,) = list(read_file(path, dataset, "b1", EXTRACTED_AT, 1000))
        assert frame.loc[0, "invoice_record_id"] == "INV1"
        assert frame.loc[0, "amount_cny"] == "100.50"


def test_bytes_no_encoding_reads_name_the_source_file_and_line(tmp_path):
    # The error said only "file ...: not UTF-8 and not GBK/GB18030 text": not the source
    # and not where in a file of thousands of rows the bad bytes are.
    path = tmp_path / "payments.csv"
    text = "收款单号,发票号,客户编号,收款日期,金额(元)\nP1,INV1,F1,2026-01-05,1\n"
    path.write_bytes(text.encode("gbk") + b"P2,INV\xff\x80,F1,2026-01-05,1\n")
    with pytest.raises(
        SourceError,
        match=r"finance source: file .*payments.csv: not UTF-8 and not GBK/GB18030 text "
        r"\(cannot read UTF-8: line 1, bytes .*; GB18030: line 3, bytes ff\)",
    ):
        list(read_file(path, DATASETS["finance_payments"], "b1", EXTRACTED_AT, 1000))


def test_missing_column_names_source_file_and_column(tmp_path):
    path = tmp_path / "payments.csv"
    path.write_text("收款单号,发票号,收款日期,金额(元)\nP1,INV1,2026-01-05,1\n", encoding="utf-8")
    with pytest.raises(
        SourceError, match=r"finance source file .*payments.csv: column\(s\) 客户编号 missing"
    ):
        list(read_file(path, DATASETS["finance_payments"], "b1", EXTRACTED_AT, 1000))


def test_missing_column_points_at_the_column_that_differs_only_in_width_or_case(tmp_path):
    path = tmp_path / "payments.csv"
    path.write_text(
        "收款单号,发票号,客户编号,收款日期,金额（元）\nP1,INV1,F1,2026-01-05,1\n", encoding="utf-8"
    )
    with pytest.raises(SourceError) as error:
        list(read_file(path, DATASETS["finance_payments"], "b1", EXTRACTED_AT, 1000))
    message = str(error.value)
    assert "column(s) 金额(元) missing" in message
    assert "it has '金额（元）' for '金额(元)'" in message
    assert "the source's columns: 收款单号, 发票号, 客户编号, 收款日期, 金额（元）" in message


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("payments.csv", b"", r"finance source: CSV file .*payments.csv is empty"),
        ("accounts.xlsx", b"", r"finance source: cannot read Excel file .*accounts.xlsx: "),
        ("accounts.xlsx", b"not a workbook\n", r"cannot read Excel file .*accounts.xlsx: "),
        ("accounts.xlsx", "客户编号,客户名称\n".encode("gbk"), r"cannot read Excel file "),
    ],
    ids=["empty-csv", "empty-xlsx", "text-as-xlsx", "csv-as-xlsx"],
)
def test_unreadable_files_name_the_source_and_file(tmp_path, name, content, message):
    # An empty CSV failed the stage with "No columns to parse from file" and a file that
    # is not a workbook with "Cannot detect file format": neither named the file.
    path = tmp_path / name
    path.write_bytes(content)
    dataset = DATASETS["finance_payments" if name.endswith(".csv") else "finance_accounts"]
    with pytest.raises(SourceError, match=message):
        list(read_file(path, dataset, "b1", EXTRACTED_AT, 1000, sheet="客户"))


def test_a_column_named_twice_in_the_header_names_the_file_and_column(tmp_path):
    # pandas renames a repeated header ("金额(元)", "金额(元).1") and the first was read
    # silently; with spaces around one of them the stage failed with "Buffer has wrong
    # number of dimensions".
    dataset = DATASETS["finance_payments"]
    for header in (
        "收款单号,发票号,客户编号,收款日期,金额(元),金额(元)",
        "收款单号,发票号,客户编号,收款日期,金额(元), 金额(元) ",
    ):
        path = tmp_path / "payments.csv"
        path.write_text(f"{header}\nP1,INV1,F1,2026-01-05,1,2\n", encoding="utf-8")
        with pytest.raises(
            SourceError,
            match=r"finance source file .*payments.csv: column\(s\) 金额\(元\) appear more than once",
        ):
            list(read_file(path, dataset, "b1", EXTRACTED_AT, 1000))
    book = tmp_path / "accounts.xlsx"
    for again in ("客户名称 ", "客户名称"):  # pandas reads the second as "客户名称.1"
        pd.DataFrame(
            [["F1", "甲公司", None, None, None, 1, None, "乙公司"]],
            columns=[*DATASETS["finance_accounts"].rename, again],
        ).to_excel(book, sheet_name="客户", index=False)
        with pytest.raises(
            SourceError, match=r"accounts.xlsx sheet 客户: column\(s\) 客户名称 appear"
        ):
            list(
                read_file(
                    book, DATASETS["finance_accounts"], "b1", EXTRACTED_AT, 1000, sheet="客户"
                )
            )
    path.write_text(
        "收款单号,发票号,客户编号,收款日期,金额(元),备注,备注\nP1,I1,F1,2026-01-05,1,x,y\n",
        encoding="utf-8",
    )
    (frame,) = list(read_file(path, dataset, "b1", EXTRACTED_AT, 1000))  # not a column it reads
    assert frame.loc[0, "amount_cny"] == "1"


def test_extra_column_is_reported_and_ignored(tmp_path, caplog):
    path = tmp_path / "payments.csv"
    path.write_text(
        "收款单号,发票号,客户编号,收款日期,金额(元),备注\nP1,INV1,F1,2026-01-05,1,x\n",
        encoding="utf-8",
    )
    (frame,) = list(read_file(path, DATASETS["finance_payments"], "b1", EXTRACTED_AT, 1000))
    assert "备注" not in frame.columns
    assert "ignoring unexpected column(s) 备注" in caplog.text


def test_missing_sources_name_the_source(demo_settings, tmp_path):
    missing_db = demo_settings.model_copy(
        update={
            "sources": demo_settings.sources.model_copy(
                update={"sales_url": f"sqlite:///{tmp_path}/nope.db"}
            )
        }
    )
    with pytest.raises(SourceError, match=r"sales source .*nope.db.* not found"):
        _collect(sales.extract, missing_db)
    missing_dir = demo_settings.model_copy(
        update={
            "sources": demo_settings.sources.model_copy(update={"finance_dir": tmp_path / "none"})
        }
    )
    with pytest.raises(SourceError, match=r"finance source: no file matches .*accounts.xlsx"):
        _collect(finance.extract, missing_dir)


def test_missing_table_names_the_table(demo_settings, tmp_path):
    copy = tmp_path / "service.db"
    shutil.copy(Path(demo_settings.sources.service_url.removeprefix("sqlite:///")), copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("DROP TABLE survey")
    settings = demo_settings.model_copy(
        update={
            "sources": demo_settings.sources.model_copy(update={"service_url": f"sqlite:///{copy}"})
        }
    )
    with pytest.raises(SourceError, match=r"service source .*: table survey not found"):
        _collect(service.extract, settings)


def test_land_system_is_idempotent_and_atomic(demo_context, tmp_path):
    first = land_system(demo_context, "sales")
    before = read_table(demo_context.engine, "raw_sales_orders")
    again = land_system(demo_context, "sales")
    after = read_table(demo_context.engine, "raw_sales_orders")
    assert first.detail == again.detail
    pd.testing.assert_frame_equal(before, after)
    # A failing source leaves the previous landing in place.
    broken = demo_context.settings.model_copy(
        update={
            "sources": demo_context.settings.sources.model_copy(
                update={"sales_url": f"sqlite:///{tmp_path}/gone.db"}
            )
        }
    )
    with pytest.raises(SourceError):
        land_system(type(demo_context)(**{**demo_context.__dict__, "settings": broken}), "sales")
    pd.testing.assert_frame_equal(read_table(demo_context.engine, "raw_sales_orders"), before)


def test_nul_characters_land_on_postgresql_with_a_warning(demo_sources, tmp_path, caplog):
    """PostgreSQL text cannot hold NUL: one such value must not fail the whole landing."""
    sources = tmp_path / "sources"
    shutil.copytree(demo_sources, sources)
    with sqlite3.connect(sources / "sales.db") as conn:
        conn.execute("UPDATE crm_customer SET address = 'Room 1' || char(0) || 'B' WHERE rowid = 3")
        key = conn.execute("SELECT cust_no FROM crm_customer WHERE rowid = 3").fetchone()[0]
    conn.close()
    payments = sources / "finance" / "payments.csv"
    raw = payments.read_bytes().decode("gb18030").splitlines(keepends=True)
    payment = raw[1].split(",")[0]
    raw[1] = raw[1].replace(",", ",\x00", 1)
    payments.write_bytes("".join(raw).encode("gb18030"))

    admin = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    schema = f"t_nul_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    ctx = None
    try:
        settings = settings_for(sources, url, tmp_path / "out")
        ctx = make_context(settings, Quarter(2026, 4), "b1", EXTRACTED_AT)
        with caplog.at_level("WARNING", logger="pipeline.warehouse"):
            run_stage(ctx, "extract_sales")
            run_stage(ctx, "extract_finance")
        customers = read_table(ctx.engine, "raw_sales_customers")
        address = customers.loc[customers["source_record_id"] == key, "address"].item()
        assert address == "Room 1\ufffdB"
        landed = read_table(ctx.engine, "raw_finance_payments")
        assert landed["source_record_id"].tolist()[0] == payment
        assert "\ufffd" in "".join(str(v) for v in landed.iloc[0].tolist())
    finally:
        if ctx is not None:
            ctx.engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
    warnings = [r.getMessage() for r in caplog.records]
    assert any(
        w.startswith("raw_sales_customers: 1 value(s) of column address hold NUL") and key in w
        for w in warnings
    )
    assert any(w.startswith("raw_finance_payments: 1 value(s)") and payment in w for w in warnings)
