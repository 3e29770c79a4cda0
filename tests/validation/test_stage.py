"""The validate stage on generated demo sources, scored against the generator's ground truth."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline import warehouse
from pipeline.datasets import DATASETS
from pipeline.extract import sales
from pipeline.extract.base import SourceError
from pipeline.validation import QuarantineThresholdError, run
from tests.validation.conftest import EXTRACTED_AT, land_raw, make_context


def _truth(demo_sources: Path) -> pd.DataFrame:
    return pd.read_csv(demo_sources / "sources" / "truth" / "defects.csv", dtype=str)


def test_demo_defects_match_ground_truth(validated, demo_sources: Path) -> None:
    ctx, result = validated
    truth = _truth(demo_sources)

    quarantine = warehouse.read_table(ctx.engine, "quarantine")
    expected = truth[truth["action"] == "quarantine"]
    got = set(
        zip(
            quarantine["dataset"], quarantine["source_record_id"], quarantine["defect"], strict=True
        )
    )
    want = set(
        zip(expected["dataset"], expected["source_record_id"], expected["defect"], strict=True)
    )
    assert len(want) > 100
    assert got == want  # every bad row with its rule, and no good row

    findings = warehouse.read_table(ctx.engine, "dq_findings", quarter="2026Q4")
    expected = truth[truth["action"] == "finding"]
    got = set(
        zip(findings["dataset"], findings["source_record_id"], findings["finding"], strict=True)
    )
    want = set(
        zip(expected["dataset"], expected["source_record_id"], expected["defect"], strict=True)
    )
    assert len(want) > 20
    assert got == want
    assert findings["severity"].isin(["high", "medium", "low"]).all()

    assert result.rows_in == result.rows_out + len(quarantine)
    for name in DATASETS:
        staged = warehouse.read_table(ctx.engine, f"stg_{name}")
        raw_rows = len(
            warehouse.read_table(ctx.engine, f"raw_{name}", columns=["source_record_id"])
        )
        assert raw_rows == len(staged) + int((quarantine["dataset"] == name).sum())
        assert staged["source_record_id"].is_unique


def test_staged_rows_are_typed(validated) -> None:
    ctx, _ = validated
    tickets = warehouse.read_table(ctx.engine, "stg_service_tickets")
    assert set(tickets["channel"].dropna()) <= {"phone", "email", "online_chat", "social"}
    raw = warehouse.read_table(ctx.engine, "raw_service_tickets").set_index("source_record_id")
    one = tickets.iloc[0]
    local = pd.Timestamp(raw.loc[one["source_record_id"], "opened_at"])
    assert pd.Timestamp(one["opened_at"]) == local - pd.Timedelta(hours=8)  # Asia/Shanghai -> UTC
    with ctx.engine.connect() as conn:
        kinds = {
            c["name"]: str(c["type"]) for c in sa.inspect(conn).get_columns("stg_service_surveys")
        }
    assert kinds["csat_score"] == "BIGINT"


def test_quarantined_row_keeps_raw_row_lineage_and_reasons(validated) -> None:
    ctx, _ = validated
    row = warehouse.read_table(ctx.engine, "quarantine", dataset="sales_order_lines").iloc[0]
    raw_row = json.loads(row["raw_row"])
    assert raw_row["source_record_id"] == row["source_record_id"]
    assert set(raw_row) >= set(DATASETS["sales_order_lines"].house_columns)
    assert row["batch_id"] == "b1" and row["source_system"] == "sales"
    assert row["reasons"] and row["defect"] in row["defects"].split(",")


def test_threshold_stop_names_dataset_and_writes_nothing_for_it(landed) -> None:
    settings = landed.model_copy(deep=True)
    settings.validation.max_quarantine_share = {"sales_order_lines": 0.001}
    ctx = make_context(settings)
    with pytest.raises(QuarantineThresholdError) as stopped:
        run(ctx)
    message = str(stopped.value)
    assert "sales_order_lines" in message and "threshold 0.1%" in message
    assert "cost_exceeds_amount:amount_cny>=cost_cny" in message
    assert "example source_record_id" in message
    assert stopped.value.datasets == ("sales_order_lines",)
    assert not warehouse.table_exists(ctx.engine, "stg_sales_order_lines")
    quarantine = warehouse.read_table(ctx.engine, "quarantine")
    assert "sales_order_lines" not in set(quarantine["dataset"])
    assert warehouse.table_exists(ctx.engine, "stg_sales_orders")  # other datasets are unaffected


def test_corrected_row_is_released_from_quarantine(landed) -> None:
    ctx = make_context(landed)
    run(ctx)
    bad = warehouse.read_table(ctx.engine, "quarantine", dataset="service_surveys")
    fixed_id = bad.loc[bad["defect"] == "csat_out_of_range", "source_record_id"].iloc[0]
    raw = warehouse.read_table(ctx.engine, "raw_service_surveys")
    with ctx.engine.begin() as conn:  # the source corrected the score; the next extract lands it
        conn.execute(
            sa.text('UPDATE "raw_service_surveys" SET csat_score = :v WHERE source_record_id = :k'),
            {"v": "4", "k": fixed_id},
        )
    run(ctx)
    after = warehouse.read_table(ctx.engine, "quarantine", dataset="service_surveys")
    assert fixed_id not in set(after["source_record_id"])
    assert len(after) == len(bad) - 1
    staged = warehouse.read_table(ctx.engine, "stg_service_surveys")
    assert (staged["source_record_id"] == fixed_id).sum() == 1
    assert len(staged) + len(after) == len(raw)


def test_row_count_collapse_stops_the_run(landed) -> None:
    ctx = make_context(landed)
    raw = warehouse.read_table(ctx.engine, "raw_service_tickets")
    # the previous batch staged three times as many tickets as this one brings
    warehouse.replace_table(ctx.engine, "stg_service_tickets", pd.concat([raw] * 3))
    with pytest.raises(QuarantineThresholdError, match="service_tickets: row count collapsed"):
        run(ctx)
    assert len(warehouse.read_table(ctx.engine, "stg_service_tickets")) == 3 * len(raw)


def test_data_docs_are_written_without_personal_data(validated) -> None:
    ctx, result = validated
    page = Path(result.detail["data_docs"])
    assert page == ctx.settings.out_dir / "validation" / "b1" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert "sales_order_lines" in html and "cost_exceeds_amount" in html
    contacts = warehouse.read_table(ctx.engine, "stg_sales_contacts")
    customers = warehouse.read_table(ctx.engine, "stg_sales_customers")
    personal = [
        *contacts["contact_name"].dropna(),
        *contacts["mobile_phone"].dropna(),
        *contacts["email"].dropna(),
    ]
    personal += [*customers["phone"].dropna(), *customers["account_manager"].dropna()]
    assert personal and not any(value in html for value in personal)


def test_schema_drift_missing_column_fails_fast_and_extra_column_is_ignored(
    demo_sources: Path, tmp_path: Path, caplog
) -> None:
    import shutil

    shutil.copy(demo_sources / "sources" / "sales.db", tmp_path / "sales.db")
    engine = sa.create_engine(f"sqlite:///{tmp_path}/sales.db")
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE sales_order ADD COLUMN channel_note TEXT")
    settings = make_context(_settings(tmp_path)).settings
    with caplog.at_level(logging.WARNING):
        frames = dict(sales.extract(settings, "b1", EXTRACTED_AT))
    assert "channel_note" not in frames["sales_orders"].columns
    assert "channel_note" in caplog.text
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE sales_order RENAME COLUMN order_date TO order_day")
    engine.dispose()
    with pytest.raises(SourceError, match="order_date missing"):
        dict(sales.extract(settings, "b1", EXTRACTED_AT))


def _settings(tmp_path: Path):
    from tests.validation.conftest import demo_settings

    settings = demo_settings(tmp_path)
    settings.sources.sales_url = f"sqlite:///{tmp_path}/sales.db"
    return settings


def test_land_raw_helper_is_idempotent(landed) -> None:
    ctx = make_context(landed)
    before = warehouse.frame_digest(warehouse.read_table(ctx.engine, "raw_sales_orders"))
    land_raw(landed)
    assert warehouse.frame_digest(warehouse.read_table(ctx.engine, "raw_sales_orders")) == before
