"""Tests of the demo source generator on a small set (200 companies).

The defect checks are written independently of the generator: each dataset has a
small validator that applies the rules of docs/sources.md, and what it finds must
be exactly what truth/defects.csv lists.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import phonenumbers
import pytest
from openpyxl import load_workbook
from stdnum.cn import uscc

from pipeline.demo import generate_demo_sources

AS_OF = date(2026, 11, 23)
CUSTOMERS = 200

RAW_COLUMNS = {
    ("sales.db", "crm_customer"): [
        "cust_no",
        "cust_name",
        "credit_code",
        "legal_rep",
        "industry",
        "province",
        "city",
        "address",
        "scale",
        "staff_count",
        "annual_revenue_wan",
        "tel",
        "email",
        "manager_name",
        "manager_email",
        "created_time",
        "updated_time",
    ],
    ("sales.db", "crm_contact"): [
        "contact_no",
        "cust_no",
        "contact_name",
        "title",
        "mobile",
        "office_tel",
        "email",
        "birthday",
        "relation",
        "is_key",
        "updated_time",
    ],
    ("sales.db", "sales_order"): ["order_no", "cust_no", "order_date", "status", "created_time"],
    ("sales.db", "sales_order_line"): [
        "line_id",
        "order_no",
        "product_code",
        "product_name",
        "qty",
        "amount",
        "cost",
    ],
    ("service.db", "account"): [
        "account_id",
        "account_name",
        "uscc",
        "phone",
        "email",
        "address",
        "modified_at",
    ],
    ("service.db", "ticket"): [
        "ticket_id",
        "account_id",
        "opened_at",
        "channel",
        "category",
        "touchpoint",
        "first_response_at",
        "resolved_at",
        "status",
        "subject",
    ],
    ("service.db", "survey"): [
        "survey_id",
        "ticket_id",
        "account_id",
        "answered_at",
        "csat",
        "nps",
        "comment",
    ],
    ("service.db", "contact_log"): [
        "log_id",
        "account_id",
        "contact_time",
        "contact_type",
        "staff",
        "summary",
    ],
}
FINANCE_COLUMNS = {
    "accounts.xlsx": [
        "客户编号",
        "客户名称",
        "纳税人识别号",
        "联系电话",
        "地址",
        "信用额度(元)",
        "更新日期",
    ],
    "invoices.csv": ["发票号", "客户编号", "开票日期", "到期日", "金额(元)"],
    "payments.csv": ["收款单号", "发票号", "客户编号", "收款日期", "金额(元)"],
}
VOCABULARY = {
    ("sales_order", "status"): {"已完成", "已取消", "执行中"},
    ("ticket", "channel"): {"电话", "邮件", "在线客服", "社交媒体"},
    ("ticket", "category"): {"服务质量建议", "服务需求建议", "服务质量投诉", "一般咨询"},
    ("ticket", "touchpoint"): {"售前咨询", "交付", "安装调试", "售后维修", "账单"},
    ("ticket", "status"): {"待处理", "处理中", "已解决", "已关闭"},
    ("crm_contact", "relation"): {"积极", "中立", "消极", "尚未建立关系"},
    ("contact_log", "contact_type"): {"信函", "电话", "会议", "拜访"},
}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate_demo_sources(out, customers=CUSTOMERS, seed=7, as_of=AS_OF)
    return out


def _snapshot(out: Path) -> dict[str, object]:
    """Everything the generator wrote, as comparable values (tables as row lists)."""
    snapshot: dict[str, object] = {}
    for db, table in RAW_COLUMNS:
        with sqlite3.connect(out / db) as connection:
            snapshot[table] = connection.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    sheet = load_workbook(out / "finance" / "accounts.xlsx", read_only=True)["客户"]
    snapshot["accounts.xlsx"] = [tuple(row) for row in sheet.iter_rows(values_only=True)]
    for name in (
        "finance/invoices.csv",
        "finance/payments.csv",
        "truth/entities.csv",
        "truth/defects.csv",
        "truth/manifest.json",
    ):
        snapshot[name] = (out / name).read_bytes()
    return snapshot


def _read(out: Path, db: str, table: str) -> pd.DataFrame:
    with sqlite3.connect(out / db) as connection:
        return pd.read_sql(f"SELECT * FROM {table} ORDER BY rowid", connection, dtype=object)


def _finance(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(
        out / "finance" / name, encoding="gbk", dtype=str, keep_default_na=False
    ).replace("", None)


def _blank(series: pd.Series) -> pd.Series:
    return series.isna() | (series.astype(str).str.strip() == "")


def _phone_valid(phone: str) -> bool:
    digits = re.sub(r"[\s\-()（）]", "", re.sub(r"转\d+$", "", phone))
    if not re.fullmatch(r"\+?\d+", digits):
        return False
    return phonenumbers.is_valid_number(phonenumbers.parse(digits, "CN"))


def _listed(out: Path, dataset: str) -> set[tuple[str, str]]:
    defects = pd.read_csv(out / "truth" / "defects.csv", dtype=str)
    rows = defects[defects["dataset"] == dataset]
    return set(zip(rows["source_record_id"], rows["defect"], strict=True))


def _found(keys: pd.Series, rules: list[tuple[str, pd.Series]]) -> set[tuple[str, str]]:
    """(key, code) for every rule that fires; duplicates of a key listed once per rule."""
    found = set()
    for code, mask in rules:
        found |= {(key, code) for key in keys[mask.fillna(False).astype(bool)]}
    return found


def _later_copy(keys: pd.Series) -> pd.Series:
    return keys.duplicated(keep="first")


def _out_of_range(values: pd.Series) -> pd.Series:
    year = values.str[:4].astype(float)
    return (year < 2000) | (year > 2090)


def test_as_of_is_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_demo_sources(tmp_path, customers=10, seed=1, as_of=None)


@pytest.mark.parametrize("customers", [1, 3, 10])
def test_a_handful_of_customers_is_enough(tmp_path: Path, customers: int) -> None:
    # Tiny demos have datasets without a single defect (empty chunks to render).
    manifest = generate_demo_sources(tmp_path, customers=customers, seed=3, as_of=AS_OF)
    assert manifest["row_counts"]["sales_customers"] >= customers
    assert (tmp_path / "truth" / "defects.csv").is_file()


def test_tables_have_exactly_the_raw_columns(demo: Path) -> None:
    for (db, table), columns in RAW_COLUMNS.items():
        with sqlite3.connect(demo / db) as connection:
            found = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
        assert found == columns, table
    sheet = load_workbook(demo / "finance" / "accounts.xlsx", read_only=True)["客户"]
    assert list(next(sheet.iter_rows(values_only=True))) == FINANCE_COLUMNS["accounts.xlsx"]
    for name in ("invoices.csv", "payments.csv"):
        header = (demo / "finance" / name).read_bytes().decode("gbk").splitlines()[0]
        assert header.split(",") == FINANCE_COLUMNS[name]


def test_labels_and_timestamps_follow_the_contract(demo: Path) -> None:
    for (table, column), labels in VOCABULARY.items():
        db = "sales.db" if table in ("sales_order", "crm_contact") else "service.db"
        values = set(_read(demo, db, table)[column].dropna())
        assert values <= labels, (table, column, values - labels)
    tickets = _read(demo, "service.db", "ticket")
    assert tickets["opened_at"].dropna().str.match(TIMESTAMP).all()


def test_finance_csv_is_gbk_not_utf8(demo: Path) -> None:
    for name in ("invoices.csv", "payments.csv"):
        raw = (demo / "finance" / name).read_bytes()
        raw.decode("gbk")
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")


def test_rerun_is_identical_and_overwrites(tmp_path: Path, demo: Path) -> None:
    again = tmp_path / "again"
    generate_demo_sources(again, customers=CUSTOMERS, seed=7, as_of=AS_OF)
    first = _snapshot(again)
    generate_demo_sources(again, customers=CUSTOMERS, seed=7, as_of=AS_OF)
    assert _snapshot(again) == first
    assert _snapshot(demo) == first


def test_other_seed_differs(tmp_path: Path, demo: Path) -> None:
    generate_demo_sources(tmp_path, customers=CUSTOMERS, seed=8, as_of=AS_OF)
    assert (tmp_path / "truth" / "entities.csv").read_bytes() != (
        demo / "truth" / "entities.csv"
    ).read_bytes()
    assert (
        _read(tmp_path, "sales.db", "crm_customer")["cust_name"].tolist()
        != _read(demo, "sales.db", "crm_customer")["cust_name"].tolist()
    )


def test_entities_cover_every_customer_record(demo: Path) -> None:
    entities = pd.read_csv(demo / "truth" / "entities.csv", dtype=str)
    expected = {("sales", key) for key in _read(demo, "sales.db", "crm_customer")["cust_no"]} | {
        ("service", key) for key in _read(demo, "service.db", "account")["account_id"]
    }
    sheet = load_workbook(demo / "finance" / "accounts.xlsx", read_only=True)["客户"]
    expected |= {("finance", row[0]) for row in sheet.iter_rows(min_row=2, values_only=True)}
    found = set(zip(entities["source_system"], entities["source_record_id"], strict=True))
    assert found == expected
    assert len(entities) == len(expected)
    assert entities.loc[entities["source_system"] == "sales", "entity_id"].nunique() == CUSTOMERS


def test_duplicate_rate_in_sales(demo: Path) -> None:
    entities = pd.read_csv(demo / "truth" / "entities.csv", dtype=str)
    per_entity = entities[entities["source_system"] == "sales"]["entity_id"].value_counts()
    assert 0.005 <= (per_entity > 1).mean() <= 0.07


def test_orders_span_at_least_twelve_quarters(demo: Path) -> None:
    orders = _read(demo, "sales.db", "sales_order")
    bad = {key for key, _ in _listed(demo, "sales_orders")}
    dates = pd.to_datetime(orders.loc[~orders["order_no"].isin(bad), "order_date"])
    assert dates.max().date() <= AS_OF
    assert dates.dt.to_period("Q").nunique() >= 12


def test_sales_uscc_valid_unless_listed(demo: Path) -> None:
    customers = _read(demo, "sales.db", "crm_customer")
    listed = {key for key, code in _listed(demo, "sales_customers") if code.startswith("uscc")}
    clean = customers[~customers["cust_no"].isin(listed)]
    assert clean["credit_code"].map(uscc.is_valid).all()


def test_sales_customer_findings_are_exact(demo: Path) -> None:
    customers = _read(demo, "sales.db", "crm_customer")
    contacts = _read(demo, "sales.db", "crm_contact")
    key_holders = set(contacts.loc[contacts["is_key"] == 1, "cust_no"])
    updated = pd.to_datetime(customers["updated_time"])
    has_uscc = ~_blank(customers["credit_code"])
    has_tel = ~_blank(customers["tel"])
    has_email = ~_blank(customers["email"])
    rules = [
        ("uscc_missing", ~has_uscc),
        ("uscc_invalid", has_uscc & ~customers["credit_code"].fillna("").map(uscc.is_valid)),
        ("phone_invalid", has_tel & ~customers["tel"].fillna("").map(_phone_valid)),
        ("email_invalid", has_email & ~customers["email"].fillna("").str.match(EMAIL)),
        ("industry_missing", _blank(customers["industry"])),
        ("region_missing", _blank(customers["province"]) | _blank(customers["city"])),
        ("account_manager_missing", _blank(customers["manager_name"])),
        ("key_contact_missing", ~customers["cust_no"].isin(key_holders)),
        ("stale_file", updated < pd.Timestamp(AS_OF - timedelta(days=92))),
    ]
    assert _found(customers["cust_no"], rules) == _listed(demo, "sales_customers")


def test_sales_contact_findings_are_exact(demo: Path) -> None:
    contacts = _read(demo, "sales.db", "crm_contact")
    no_phone = _blank(contacts["mobile"]) & _blank(contacts["office_tel"])
    bad_phone = contacts[["mobile", "office_tel"]].apply(
        lambda row: any(isinstance(v, str) and not _phone_valid(v) for v in row), axis=1
    )
    rules = [
        ("phone_invalid", bad_phone),
        (
            "email_invalid",
            ~_blank(contacts["email"]) & ~contacts["email"].fillna("").str.match(EMAIL),
        ),
        ("key_contact_phone_missing", (contacts["is_key"] == 1) & no_phone),
    ]
    assert _found(contacts["contact_no"], rules) == _listed(demo, "sales_contacts")


def test_order_and_line_defects_are_exact(demo: Path) -> None:
    customers = set(_read(demo, "sales.db", "crm_customer")["cust_no"])
    orders = _read(demo, "sales.db", "sales_order")
    order_rules = [
        ("duplicate_key", _later_copy(orders["order_no"])),
        ("unknown_customer", orders["cust_no"].notna() & ~orders["cust_no"].isin(customers)),
        ("missing_required", orders["cust_no"].isna() | orders["order_date"].isna()),
        ("date_out_of_range", _out_of_range(orders["order_date"].fillna("2020"))),
    ]
    assert _found(orders["order_no"], order_rules) == _listed(demo, "sales_orders")

    lines = _read(demo, "sales.db", "sales_order_line")
    amount = lines["amount"].astype(float)
    cost = lines["cost"].astype(float)
    line_rules = [
        ("duplicate_key", _later_copy(lines["line_id"])),
        (
            "unknown_order",
            lines["order_no"].notna() & ~lines["order_no"].isin(set(orders["order_no"])),
        ),
        ("missing_required", lines["order_no"].isna() | lines["amount"].isna()),
        ("negative_amount", amount < 0),
        ("cost_exceeds_amount", cost > amount),
    ]
    keys = lines["line_id"].astype(str)
    assert _found(keys, line_rules) == _listed(demo, "sales_order_lines")


def test_service_defects_are_exact(demo: Path) -> None:
    accounts = set(_read(demo, "service.db", "account")["account_id"])
    tickets = _read(demo, "service.db", "ticket")
    opened = pd.to_datetime(tickets["opened_at"])
    ticket_rules = [
        ("duplicate_key", _later_copy(tickets["ticket_id"])),
        ("unknown_customer", tickets["account_id"].notna() & ~tickets["account_id"].isin(accounts)),
        ("missing_required", tickets["account_id"].isna() | tickets["opened_at"].isna()),
        ("date_out_of_range", _out_of_range(tickets["opened_at"].fillna("2020"))),
        ("response_before_open", pd.to_datetime(tickets["first_response_at"]) < opened),
        ("resolved_before_open", pd.to_datetime(tickets["resolved_at"]) < opened),
    ]
    assert _found(tickets["ticket_id"], ticket_rules) == _listed(demo, "service_tickets")

    surveys = _read(demo, "service.db", "survey")
    survey_rules = [
        ("duplicate_key", _later_copy(surveys["survey_id"])),
        ("unknown_customer", surveys["account_id"].notna() & ~surveys["account_id"].isin(accounts)),
        ("missing_required", surveys["account_id"].isna() | surveys["answered_at"].isna()),
        ("date_out_of_range", _out_of_range(surveys["answered_at"].fillna("2020"))),
        ("csat_out_of_range", ~surveys["csat"].astype(int).between(1, 5)),
        ("nps_out_of_range", ~surveys["nps"].astype(int).between(0, 10)),
    ]
    assert _found(surveys["survey_id"], survey_rules) == _listed(demo, "service_surveys")
    assert surveys["ticket_id"].isna().any()  # relationship surveys are not defects

    log = _read(demo, "service.db", "contact_log")
    log_rules = [
        ("duplicate_key", _later_copy(log["log_id"])),
        ("unknown_customer", log["account_id"].notna() & ~log["account_id"].isin(accounts)),
        ("missing_required", log["account_id"].isna() | log["contact_time"].isna()),
        ("date_out_of_range", _out_of_range(log["contact_time"].fillna("2020"))),
        ("contact_report_missing", _blank(log["summary"])),
    ]
    assert _found(log["log_id"], log_rules) == _listed(demo, "service_contact_log")


def test_finance_defects_are_exact(demo: Path) -> None:
    sheet = load_workbook(demo / "finance" / "accounts.xlsx", read_only=True)["客户"]
    accounts = {row[0] for row in sheet.iter_rows(min_row=2, values_only=True)}
    invoices = _finance(demo, "invoices.csv")
    invoice_rules = [
        ("duplicate_key", _later_copy(invoices["发票号"])),
        ("unknown_customer", invoices["客户编号"].notna() & ~invoices["客户编号"].isin(accounts)),
        ("missing_required", invoices[["客户编号", "开票日期", "金额(元)"]].isna().any(axis=1)),
        ("date_out_of_range", _out_of_range(invoices["开票日期"].fillna("2020"))),
        ("negative_amount", invoices["金额(元)"].astype(float) < 0),
    ]
    assert _found(invoices["发票号"], invoice_rules) == _listed(demo, "finance_invoices")

    payments = _finance(demo, "payments.csv")
    invoice_date = invoices.drop_duplicates("发票号").set_index("发票号")["开票日期"]
    billed = payments["发票号"].map(invoice_date)
    payment_rules = [
        ("duplicate_key", _later_copy(payments["收款单号"])),
        (
            "unknown_invoice",
            payments["发票号"].notna() & ~payments["发票号"].isin(set(invoices["发票号"])),
        ),
        ("missing_required", payments[["发票号", "收款日期", "金额(元)"]].isna().any(axis=1)),
        ("date_out_of_range", _out_of_range(payments["收款日期"].fillna("2020"))),
        ("negative_amount", payments["金额(元)"].astype(float) < 0),
        (
            "payment_before_invoice",
            pd.to_datetime(payments["收款日期"], errors="coerce") < pd.to_datetime(billed),
        ),
    ]
    assert _found(payments["收款单号"], payment_rules) == _listed(demo, "finance_payments")


def test_manifest_counts_match_tables(demo: Path) -> None:
    import json

    manifest = json.loads((demo / "truth" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["customers"] == CUSTOMERS
    assert manifest["as_of"] == AS_OF.isoformat()
    assert manifest["row_counts"]["sales_orders"] == len(_read(demo, "sales.db", "sales_order"))
    assert manifest["row_counts"]["finance_invoices"] == len(_finance(demo, "invoices.csv"))
