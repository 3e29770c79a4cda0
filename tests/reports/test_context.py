"""The pure context builders: figures, grouping, masking, deadlines, missing tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.reports.context import (
    ReportDataError,
    build_archive_context,
    build_satisfaction_context,
    format_change,
    localise_match_text,
    mask_contact,
    report_date,
)
from pipeline.settings import Settings
from tests.reports.frames import (
    QUARTER,
    customer_quarter_frame,
    customers_frame,
    events_frame,
    findings_frame,
    metrics_frame,
    quarantine_frame,
    review_frame,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(out_dir=tmp_path)


def test_satisfaction_kpis_are_formatted_with_change(settings: Settings) -> None:
    metrics = metrics_frame()
    ctx = build_satisfaction_context(metrics, customer_quarter_frame(), None, settings, QUARTER)
    csat = next(k for k in ctx["kpis"] if k["metric"] == "csat_top2_share")
    row = metrics.query(
        "quarter == '2026Q3' and metric == 'csat_top2_share' and dimension == 'overall'"
    )
    assert csat["value"] == f"{row['value'].iloc[0] * 100:.1f}%"
    assert csat["change"].endswith(" pp")
    assert csat["label"] == "满意度(4-5分占比)"
    assert ctx["report_date"] == "2026-10-01"
    # trends, SLA by channel, complaint mix x2, tier distribution and migration
    assert len(ctx["charts"]) == 7
    assert all(c["src"].startswith("data:image/svg+xml;base64,") for c in ctx["charts"])
    assert [b["dimension"] for b in ctx["breakdowns"]] == ["价值分级", "地区", "行业"]
    assert ctx["coverage"] == []


def test_count_charts_label_bars_as_whole_numbers(settings: Settings, monkeypatch) -> None:
    from pipeline.reports import charts

    labels = {}

    def bar_chart(labels_, values, title, unit="", reference=None, horizontal=False, fmt="%.1f"):
        labels[title] = [fmt % v for v in values]
        return "data:image/svg+xml;base64,"

    monkeypatch.setattr(charts, "bar_chart", bar_chart)
    build_satisfaction_context(metrics_frame(), customer_quarter_frame(), None, settings, QUARTER)
    # customers and complaints are counted: "148", not "148.0"; shares keep one decimal
    for title in ("客户价值分级分布", "投诉与建议结构(按类别)", "投诉与建议结构(按接触点)"):
        assert labels[title] and all(label.isdigit() for label in labels[title]), labels
    assert all("." in label for label in labels["各渠道24小时首次响应达标率"])


def test_trend_charts_show_every_quarter_even_without_data_at_the_end() -> None:
    import base64

    from pipeline.reports import charts

    quarters = ["2026Q1", "2026Q2", "2026Q3"]
    uri = charts.line_chart(quarters, {"NPS": [12.0, 8.5, None]}, "NPS")
    svg = base64.b64decode(uri.split(",", 1)[1]).decode()
    # glyphs are paths; matplotlib names each text in a comment before them. A quarter with no
    # surveys keeps its place on the axis (a gap), instead of the axis ending before it.
    assert all(f"<!-- {q} -->" in svg for q in quarters)


def test_satisfaction_is_reproducible(settings: Settings) -> None:
    a = build_satisfaction_context(
        metrics_frame(), customer_quarter_frame(), None, settings, QUARTER
    )
    b = build_satisfaction_context(
        metrics_frame(), customer_quarter_frame(), None, settings, QUARTER
    )
    assert a == b


def test_satisfaction_requires_metrics(settings: Settings) -> None:
    with pytest.raises(ReportDataError, match="mart_metrics"):
        build_satisfaction_context(None, None, None, settings, QUARTER)
    with pytest.raises(ReportDataError, match="2027Q1"):
        build_satisfaction_context(metrics_frame(), None, None, settings, QUARTER.shift(2))


def test_satisfaction_without_optional_tables_has_empty_sections(settings: Settings) -> None:
    ctx = build_satisfaction_context(metrics_frame(2), None, None, settings, QUARTER)
    assert ctx["tier_rows"] == [] and ctx["migration_rows"] == []


def test_movers_skip_small_groups(settings: Settings) -> None:
    metrics = metrics_frame()
    metrics.loc[
        (metrics["dimension"] == "region") & (metrics["segment"] == "华北"), "is_small_group"
    ] = True
    metrics.loc[
        (metrics["quarter"] == "2026Q3")
        & (metrics["segment"] == "华北")
        & (metrics["metric"] == "nps"),
        "change",
    ] = 99.0
    ctx = build_satisfaction_context(
        metrics, None, quarantine_frame(), settings, QUARTER, {"service_surveys": 997}
    )
    assert all(m["segment"] != "华北" for m in ctx["top_moves"])
    coverage = {c["dataset"]: c for c in ctx["coverage"]}
    assert coverage["服务-满意度调查"]["rows_quarantined"] == "3"
    assert coverage["服务-满意度调查"]["share_quarantined"] == "0.30%"


def test_change_direction() -> None:
    assert format_change("resolution_median_hours", -2.0) == ("-2.0 h", "good")
    assert format_change("nps", -3.0) == ("-3", "bad")
    assert format_change("csat_top2_share", 0.025) == ("+2.5 pp", "good")


def test_mask_contact() -> None:
    assert mask_contact("电话 138 1234 5678 或 010-1234 5678") == "电话 138******78 或 010******78"
    assert mask_contact("wang.fang@example.com") == "w***@example.com"
    assert mask_contact("订单 2026") == "订单 2026"
    assert mask_contact(None) == ""


def test_archive_groups_actions_owners_and_deadlines(settings: Settings) -> None:
    ctx = build_archive_context(
        findings_frame(40),
        findings_frame(20, QUARTER.previous()),
        customers_frame(),
        customer_quarter_frame(),
        review_frame(),
        events_frame(),
        settings,
        QUARTER,
    )
    worklist: pd.DataFrame = ctx["worklist"]
    assert set(worklist["deadline"]) == {"2026-10-31"}  # 2026-10-01 + 30 days
    assert worklist["item_id"].is_unique
    assert worklist["action"].str.len().gt(0).all()
    assert {"incomplete", "invalid", "stale", "review_pair", "both_ends", "tier_change"} <= set(
        worklist["category"]
    )
    # findings without a manager fall back to the customer's manager from core_customers
    findings = worklist[worklist["source_record_id"] != ""]
    assert "(未指定负责人)" not in set(findings["owner"])
    assert not worklist["detail"].str.contains(r"1234 \d{4}").any()
    incomplete = next(s for s in ctx["summary"] if s["category"] == "档案不完整")
    assert (
        incomplete["count"] == "16"
        and incomplete["previous"] == "8"
        and incomplete["change"] == "+8"
    )
    assert ctx["review"]["rows"][0][3].count("*") > 0  # phone in evidence masked
    assert len(ctx["both_ends"]) > 0 and len(ctx["tier_changes"]) > 0
    assert not any("nan" in str(v) for row in ctx["both_ends"] for v in row.values())
    assert sum(len(g["items"]) for g in ctx["by_manager"]) == len(worklist)


def test_archive_deadline_follows_setting(tmp_path: Path) -> None:
    settings = Settings(out_dir=tmp_path, reports={"finding_deadline_days": 14})
    ctx = build_archive_context(findings_frame(3), None, None, None, None, None, settings, QUARTER)
    assert set(ctx["worklist"]["deadline"]) == {"2026-10-15"}
    assert report_date(QUARTER).isoformat() == "2026-10-01"


def test_archive_with_no_tables_renders_empty_sections(settings: Settings) -> None:
    ctx = build_archive_context(None, None, None, None, None, None, settings, QUARTER)
    assert ctx["worklist"].empty and ctx["total_items"] == "0"
    assert ctx["review"] == {"columns": [], "rows": [], "total": 0}


def test_english_catalog(tmp_path: Path) -> None:
    settings = Settings(out_dir=tmp_path, reports={"language": "en"})
    ctx = build_archive_context(findings_frame(5), None, None, None, None, None, settings, QUARTER)
    assert ctx["title"] == "Customer File Improvement Report"
    assert ctx["worklist"]["action"].iloc[0] in {
        "Fill in the missing fields with supporting documents",
        "Verify and correct the value",
        "Contact the customer, update the file and log the contact report",
    }


def test_pdf_worklist_is_capped_most_severe_first(tmp_path: Path) -> None:
    settings = Settings(out_dir=tmp_path, reports={"pdf_worklist_max_items": 10})
    ctx = build_archive_context(findings_frame(40), None, None, None, None, None, settings, QUARTER)
    shown = [i for g in ctx["by_manager"] for i in g["items"]]
    assert len(shown) == 10 and len(ctx["worklist"]) == 40
    assert ctx["worklist_truncated"] and ctx["shown_items"] == "10"
    assert {i["severity"] for i in shown} == {"error"}


def test_merge_and_review_tables_are_capped_with_every_row_kept(tmp_path: Path) -> None:
    """A first run can merge tens of thousands of records: the PDF lists the first rows,
    the attachment keeps all of them (contacts masked like the PDF)."""
    settings = Settings(out_dir=tmp_path, reports={"pdf_section_max_rows": 5})
    events = pd.DataFrame(
        {
            "event_type": ["merge"] * 12,
            "customer_id": [f"C{i:03d}" for i in range(12)],
            "evidence": [f"phone 1380013{i:04d} agreed" for i in range(12)],
            "quarter": "2026Q3",
        }
    )
    ctx = build_archive_context(None, None, None, None, None, events, settings, QUARTER)
    assert len(ctx["merges"]["rows"]) == 5 and ctx["merges"]["total"] == 12
    full = ctx["evidence"]["merges"]
    assert len(full) == 12 and "quarter" not in full.columns
    assert not full["evidence"].str.contains("13800130001").any()


@pytest.mark.parametrize("language", ["zh_CN", "en"])
def test_every_finding_code_and_match_label_has_words(language: str) -> None:
    """The archive staff read sentences, not codes: every finding the validation stage
    writes and every field and level the customer matcher labels is in the catalog."""
    from pipeline.reports.render import catalog
    from pipeline.transform.resolve import CUSTOMER_FIELDS, _level_labels
    from pipeline.validation.findings import SEVERITY

    messages = catalog(language)
    assert {f"finding.{code}" for code in SEVERITY} <= set(messages)
    for field, labels in _level_labels(CUSTOMER_FIELDS).items():
        assert f"field.{field}" in messages
        for label in labels.values():
            assert label.startswith("bigram jaccard") or f"level.{label}" in messages, label
    text = localise_match_text("name=bigram jaccard >= 0.7; uscc=missing", language)
    assert "jaccard" not in text and "uscc" not in text, text


def test_findings_and_match_evidence_read_in_the_report_language(settings: Settings) -> None:
    findings = pd.DataFrame(
        {
            "customer_record_id": ["C1", "C2", "C3"],
            "source_system": "sales",
            "source_record_id": ["C1", "C2", "C3"],
            "field": ["account_manager", "updated_at", "weird_field"],
            "finding": ["account_manager_missing", "stale_file", "made_up_code"],
            "severity": ["high", "medium", "low"],
            "detail": ["no responsible account manager", "old", "producer's own words"],
            "account_manager": ["王芳", "王芳", "王芳"],
        }
    )
    events = pd.DataFrame(
        {
            "event_type": ["merge", "split"],
            "customer_id": ["CUST-000001", "CUST-000002"],
            "fields_agreed": ["name (bigram jaccard >= 0.3), uscc (exact)", "city (exact)"],
            "evidence": ["a~b p=1.000 decided same agreed: uscc (exact)", "records moved to X"],
        }
    )
    review = pd.DataFrame(
        {"id_l": ["a"], "id_r": ["b"], "evidence": ["name=exact; uscc=missing; phone=different"]}
    )
    ctx = build_archive_context(findings, None, None, None, review, events, settings, QUARTER)
    detail = dict(zip(ctx["worklist"]["code"], ctx["worklist"]["detail"], strict=True))
    assert detail["account_manager_missing"] == "未指定负责的客户经理"
    assert detail["stale_file"] == "档案超过 92 天未更新"
    assert detail["made_up_code"] == "weird_field: made_up_code producer's own words"
    assert [row[0] for row in ctx["merges"]["rows"]] == ["合并", "拆分"]
    agreed = ctx["merges"]["columns"].index("fields_agreed")
    assert ctx["merges"]["rows"][0][agreed] == "名称(相似度 ≥ 0.3), 统一社会信用代码(一致)"
    assert ctx["review"]["rows"][0][2] == "名称:一致; 统一社会信用代码:缺失; 电话:不同"
    # the attached evidence files keep the warehouse's codes (id_l,id_r rows feed decisions)
    assert ctx["evidence"]["merges"]["event_type"].tolist() == ["merge", "split"]


def test_worklist_file_names_categories_and_severities_in_words() -> None:
    from pipeline.reports.worklist import worklist_csv

    worklist = pd.DataFrame(
        {"item_id": ["1"], "category": ["incomplete"], "severity": ["high"], "code": ["x_missing"]}
    )
    text = worklist_csv(worklist, "zh_CN").decode("utf-8-sig").splitlines()
    assert text == ["事项编号,类别,严重程度,问题代码", "1,档案不完整,高,x_missing"]


def test_worklist_csv_keeps_formula_like_text_as_text() -> None:
    import csv
    import io

    from pipeline.reports.worklist import worklist_csv

    names = ['=HYPERLINK("http://x","点我")', '@SUM(1+1)*cmd|" /C calc"!A0', "+86 10 1234", "华创"]
    worklist = pd.DataFrame({"item_id": ["1", "2", "3", "4"], "customer_name": names})
    rows = list(csv.reader(io.StringIO(worklist_csv(worklist, "zh_CN").decode("utf-8-sig"))))
    # Excel, LibreOffice and Sheets run a cell starting with = + - @ as a formula.
    assert [r[1] for r in rows[1:]] == ["'" + n for n in names[:3]] + ["华创"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4"]


def test_worklist_workbook_holds_the_rows_as_text_dates_and_no_formulas() -> None:
    import io
    import time
    from datetime import date

    from openpyxl import load_workbook

    from pipeline.reports.worklist import worklist_xlsx

    worklist = pd.DataFrame(
        {
            "item_id": ["1", "2"],
            "category": ["incomplete", None],
            "severity": ["high", "low"],
            "customer_name": ['=HYPERLINK("http://x","点我")', "华创科技\n(北京)"],
            "detail": ["http://example.cn/" + "x" * 300, None],
            "deadline": [date(2026, 10, 15), None],
        }
    )
    data = worklist_xlsx(worklist, "zh_CN")
    time.sleep(1.1)
    assert worklist_xlsx(worklist, "zh_CN") == data  # the same worklist, the same bytes
    sheet = load_workbook(io.BytesIO(data)).active
    assert sheet.freeze_panes == "A2" and sheet.auto_filter.ref == "A1:F3"
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("事项编号", "类别", "严重程度", "客户名称", "问题说明", "完成期限")
    assert rows[1][:5] == (
        "1",
        "档案不完整",
        "高",
        '=HYPERLINK("http://x","点我")',
        "http://example.cn/" + "x" * 300,
    )
    assert rows[1][5].date() == date(2026, 10, 15)
    assert sheet["D2"].data_type == "s"  # text, not a formula Excel would run
    assert rows[2] == ("2", None, "低", "华创科技\n(北京)", None, None)


def test_satisfaction_appendix_names_datasets_defects_and_settings_in_words(
    settings: Settings,
) -> None:
    quarantine = pd.DataFrame(
        {
            "dataset": ["finance_invoices"] * 3 + ["sales_orders", "made_up_dataset"],
            "defect": ["missing_required"] * 2 + ["negative_amount", "my_rule", "my_rule"],
            "reasons": [
                "required field amount_cny is blank",
                "required field invoice_date is blank",
                "amount_cny is negative",
                "order looks odd; amount_cny is negative",
                "looks odd",
            ],
        }
    )
    ctx = build_satisfaction_context(
        metrics_frame(), customer_quarter_frame(), quarantine, settings, QUARTER
    )
    coverage = {c["dataset"]: c["reasons"] for c in ctx["coverage"]}
    # grouped by defect code, not by the reason text that names each field
    assert coverage["财务-发票"] == "必填字段为空 (2); 金额为负 (1)"
    assert coverage["销售-订单"] == "order looks odd (1)"  # a code the catalog lacks
    assert coverage["made_up_dataset"] == "looks odd (1)"
    rows = {r["key"]: r["name"] for section in ctx["thresholds"] for r in section["rows"]}
    assert rows["first_response_sla_hours"] == "首次响应时限(小时)"
    assert all(name != key for key, name in rows.items()), rows
