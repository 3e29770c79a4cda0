"""The quarter's archive review (stage quality_findings): files as known at the quarter's end."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from pipeline import warehouse
from pipeline.quarters import Quarter
from pipeline.runner import make_context
from pipeline.settings import Settings
from pipeline.validation.findings import findings_for_quarter, run_quality_findings

TZ = "Asia/Shanghai"
AS_OF = datetime(2026, 11, 23, 2, 0)
CUSTOMER = {
    "source_record_id": "C1",
    "customer_name": "北京甲科技有限公司",
    "uscc": "91110108551385082Q",
    "industry": "制造业",
    "province": "北京市",
    "city": "北京市",
    "phone": "010-6234 5678",
    "email": "info@jia.com.cn",
    "account_manager": "王经理",
    "created_at": pd.Timestamp("2025-01-10"),
    "updated_at": pd.Timestamp("2026-05-01"),
}
CONTACT = {
    "source_record_id": "CT1",
    "customer_record_id": "C1",
    "mobile_phone": "138 1234 5678",
    "office_phone": None,
    "email": "zhang.san@jia.com.cn",
    "is_key_person": True,
}


def frames(customers: list[dict] | None = None) -> tuple[pd.DataFrame, ...]:
    customer_frame = pd.DataFrame(customers or [CUSTOMER])
    contacts = pd.DataFrame([CONTACT]).astype({"is_key_person": "boolean"})
    contact_log = pd.DataFrame(
        [
            # a contact without report in Q3 (2026-08-10), one with a report in Q2
            {"source_record_id": "L1", "customer_record_id": "S1", "summary": None,
             "contacted_at": pd.Timestamp("2026-08-10 03:00")},
            {"source_record_id": "L2", "customer_record_id": "S1", "summary": "已沟通",
             "contacted_at": pd.Timestamp("2026-05-10 03:00")},
        ]
    )  # fmt: skip
    return customer_frame, contacts, contact_log


def review(quarter: str, customers: list[dict] | None = None) -> set[tuple[str, str]]:
    found = findings_for_quarter(*frames(customers), Quarter.parse(quarter), TZ, AS_OF)
    assert set(found["quarter"]) <= {quarter}
    return set(zip(found["source_record_id"], found["finding"], strict=True))


def test_staleness_is_judged_at_the_reviewed_quarters_end():
    # Last update 2026-05-01: fresh at the end of Q2, more than 92 days old at the end of Q3.
    assert ("C1", "stale_file") not in review("2026Q2")
    assert ("C1", "stale_file") in review("2026Q3")


def test_only_the_quarters_contacts_must_have_a_report():
    assert ("L1", "contact_report_missing") in review("2026Q3")
    assert ("L1", "contact_report_missing") not in review("2026Q2")


def test_customers_created_after_the_quarter_are_not_reviewed():
    late = {
        **CUSTOMER,
        "source_record_id": "C2",
        "uscc": None,
        "created_at": pd.Timestamp("2026-08-01"),
    }
    assert ("C2", "uscc_missing") in review("2026Q3", [CUSTOMER, late])
    assert not {f for f in review("2026Q2", [CUSTOMER, late]) if f[0] == "C2"}


def test_an_open_quarter_is_reviewed_as_of_the_batch():
    # 2026Q4 has not ended on AS_OF: the review day is AS_OF, 206 days after the last update.
    found = findings_for_quarter(*frames(), Quarter.parse("2026Q4"), TZ, AS_OF)
    stale = found.query("finding == 'stale_file'")
    assert stale["detail"].tolist() == ["last update more than 92 days before 2026-11-23"]


@pytest.fixture
def staged_context(tmp_path):
    settings = Settings(warehouse_url=f"sqlite:///{tmp_path / 'warehouse.db'}", out_dir=tmp_path)
    ctx = make_context(settings, Quarter(2026, 2), "backfill-2026Q2", AS_OF)
    customers, contacts, contact_log = frames()
    warehouse.replace_table(ctx.engine, "stg_sales_customers", customers)
    warehouse.replace_table(ctx.engine, "stg_sales_contacts", contacts)
    warehouse.replace_table(ctx.engine, "stg_service_contact_log", contact_log)
    return ctx


def test_stage_replaces_only_its_quarter_and_is_idempotent(staged_context):
    ctx = staged_context
    other = findings_for_quarter(*frames(), Quarter(2026, 3), TZ, AS_OF)
    warehouse.replace_partition(
        ctx.engine, "dq_findings", other.drop(columns=["quarter"]), quarter="2026Q3"
    )
    q3_before = warehouse.frame_digest(
        warehouse.read_table(ctx.engine, "dq_findings", quarter="2026Q3")
    )

    first = run_quality_findings(ctx)
    q2_first = warehouse.frame_digest(
        warehouse.read_table(ctx.engine, "dq_findings", quarter="2026Q2")
    )
    second = run_quality_findings(ctx)
    q2_second = warehouse.read_table(ctx.engine, "dq_findings", quarter="2026Q2")

    assert first.rows_out == second.rows_out == len(q2_second)
    assert warehouse.frame_digest(q2_second) == q2_first
    assert ("C1", "stale_file") not in set(
        zip(q2_second["source_record_id"], q2_second["finding"], strict=True)
    )
    q3_after = warehouse.read_table(ctx.engine, "dq_findings", quarter="2026Q3")
    assert warehouse.frame_digest(q3_after) == q3_before


def test_stage_without_staged_files_names_the_missing_table(tmp_path):
    settings = Settings(warehouse_url=f"sqlite:///{tmp_path / 'warehouse.db'}", out_dir=tmp_path)
    ctx = make_context(settings, Quarter(2026, 2), "b", AS_OF)
    with pytest.raises(LookupError, match="needs stg_sales_customers: run the ingest"):
        run_quality_findings(ctx)
