"""The house datasets: raw-to-house names, column kinds and keys (see docs/sources.md).

One registry drives extraction (renames), typing (``pipeline.transform.staging``),
the staging tables (``stg_<dataset>``) and validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LINEAGE_COLUMNS = ("source_system", "source_record_id", "batch_id", "extracted_at")

RELATIONSHIP = {
    "积极": "positive",
    "中立": "neutral",
    "消极": "negative",
    "尚未建立关系": "not_established",
}
ORDER_STATUS = {"已完成": "completed", "已取消": "cancelled", "执行中": "open"}
CHANNEL = {"电话": "phone", "邮件": "email", "在线客服": "online_chat", "社交媒体": "social"}
CATEGORY = {
    "服务质量建议": "service_quality_suggestion",
    "服务需求建议": "service_need_suggestion",
    "服务质量投诉": "service_quality_complaint",
    "一般咨询": "inquiry",
}
TOUCHPOINT = {
    "售前咨询": "presales",
    "交付": "delivery",
    "安装调试": "installation",
    "售后维修": "repair",
    "账单": "billing",
}
TICKET_STATUS = {
    "待处理": "open",
    "处理中": "in_progress",
    "已解决": "resolved",
    "已关闭": "closed",
}
CONTACT_TYPE = {"信函": "letter", "电话": "phone", "会议": "meeting", "拜访": "visit"}


@dataclass(frozen=True)
class Column:
    """One house column: its raw name in the source, its kind, and whether it is required."""

    name: str
    raw: str
    kind: str = "text"  # text | int | float | date | datetime | bool | vocab
    required: bool = False
    vocab: dict[str, str] | None = None


@dataclass(frozen=True)
class Dataset:
    """A source dataset: one row per ``source_record_id``; ``raw`` is a table or a file name setting."""

    name: str
    system: str
    raw: str
    key_raw: str
    columns: tuple[Column, ...]
    parents: dict[str, str] = field(default_factory=dict)  # reference column -> parent dataset

    @property
    def staging_table(self) -> str:
        return f"stg_{self.name}"

    @property
    def rename(self) -> dict[str, str]:
        return {self.key_raw: "source_record_id", **{c.raw: c.name for c in self.columns}}

    @property
    def house_columns(self) -> list[str]:
        return ["source_record_id", *[c.name for c in self.columns]]


def _c(
    name: str, raw: str | None = None, kind: str = "text", required: bool = False, vocab=None
) -> Column:
    return Column(name=name, raw=raw or name, kind=kind, required=required, vocab=vocab)


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "sales_customers",
            "sales",
            "crm_customer",
            "cust_no",
            (
                _c("customer_name", "cust_name", required=True),
                _c("uscc", "credit_code"),
                _c("legal_representative", "legal_rep"),
                _c("industry"),
                _c("province"),
                _c("city"),
                _c("address"),
                _c("scale"),
                _c("employee_count", "staff_count", "int"),
                _c("annual_revenue_cny", "annual_revenue_wan", "float"),
                _c("phone", "tel"),
                _c("email"),
                _c("account_manager", "manager_name"),
                _c("account_manager_email", "manager_email"),
                _c("created_at", "created_time", "datetime"),
                _c("updated_at", "updated_time", "datetime"),
            ),
        ),
        Dataset(
            "sales_contacts",
            "sales",
            "crm_contact",
            "contact_no",
            (
                _c("customer_record_id", "cust_no", required=True),
                _c("contact_name", required=True),
                _c("title"),
                _c("mobile_phone", "mobile"),
                _c("office_phone", "office_tel"),
                _c("email"),
                _c("birth_date", "birthday", "date"),
                _c("relationship_status", "relation", "vocab", vocab=RELATIONSHIP),
                _c("is_key_person", "is_key", "bool"),
                _c("updated_at", "updated_time", "datetime"),
            ),
            parents={"customer_record_id": "sales_customers"},
        ),
        Dataset(
            "sales_orders",
            "sales",
            "sales_order",
            "order_no",
            (
                _c("customer_record_id", "cust_no", required=True),
                _c("order_date", kind="date", required=True),
                _c("order_status", "status", "vocab", vocab=ORDER_STATUS),
                _c("created_at", "created_time", "datetime"),
            ),
            parents={"customer_record_id": "sales_customers"},
        ),
        Dataset(
            "sales_order_lines",
            "sales",
            "sales_order_line",
            "line_id",
            (
                _c("order_record_id", "order_no", required=True),
                _c("product_code"),
                _c("product_name"),
                _c("quantity", "qty", "float"),
                _c("amount_cny", "amount", "float", required=True),
                _c("cost_cny", "cost", "float"),
            ),
            parents={"order_record_id": "sales_orders"},
        ),
        Dataset(
            "service_accounts",
            "service",
            "account",
            "account_id",
            (
                _c("customer_name", "account_name", required=True),
                _c("uscc"),
                _c("phone"),
                _c("email"),
                _c("address"),
                _c("updated_at", "modified_at", "datetime"),
            ),
        ),
        Dataset(
            "service_tickets",
            "service",
            "ticket",
            "ticket_id",
            (
                _c("customer_record_id", "account_id", required=True),
                _c("opened_at", kind="datetime", required=True),
                _c("channel", kind="vocab", vocab=CHANNEL, required=True),
                _c("category", kind="vocab", vocab=CATEGORY),
                _c("touchpoint", kind="vocab", vocab=TOUCHPOINT),
                _c("first_response_at", kind="datetime"),
                _c("resolved_at", kind="datetime"),
                _c("ticket_status", "status", "vocab", vocab=TICKET_STATUS),
                _c("subject"),
            ),
            parents={"customer_record_id": "service_accounts"},
        ),
        Dataset(
            "service_surveys",
            "service",
            "survey",
            "survey_id",
            (
                _c("ticket_record_id", "ticket_id"),
                _c("customer_record_id", "account_id", required=True),
                _c("answered_at", kind="datetime", required=True),
                _c("csat_score", "csat", "int"),
                _c("nps_score", "nps", "int"),
                _c("comment"),
            ),
            parents={
                "customer_record_id": "service_accounts",
                "ticket_record_id": "service_tickets",
            },
        ),
        Dataset(
            "service_contact_log",
            "service",
            "contact_log",
            "log_id",
            (
                _c("customer_record_id", "account_id", required=True),
                _c("contacted_at", "contact_time", "datetime", required=True),
                _c("contact_type", kind="vocab", vocab=CONTACT_TYPE),
                _c("staff_name", "staff"),
                _c("summary"),
            ),
            parents={"customer_record_id": "service_accounts"},
        ),
        Dataset(
            "finance_accounts",
            "finance",
            "finance_accounts_file",
            "客户编号",
            (
                _c("customer_name", "客户名称", required=True),
                _c("uscc", "纳税人识别号"),
                _c("phone", "联系电话"),
                _c("address", "地址"),
                _c("credit_limit_cny", "信用额度(元)", "float"),
                _c("updated_at", "更新日期", "datetime"),
            ),
        ),
        Dataset(
            "finance_invoices",
            "finance",
            "finance_invoices_file",
            "发票号",
            (
                _c("customer_record_id", "客户编号", required=True),
                _c("invoice_date", "开票日期", "date", required=True),
                _c("due_date", "到期日", "date"),
                _c("amount_cny", "金额(元)", "float", required=True),
            ),
            parents={"customer_record_id": "finance_accounts"},
        ),
        Dataset(
            "finance_payments",
            "finance",
            "finance_payments_file",
            "收款单号",
            (
                _c("invoice_record_id", "发票号", required=True),
                _c("customer_record_id", "客户编号"),
                _c("paid_date", "收款日期", "date", required=True),
                _c("amount_cny", "金额(元)", "float", required=True),
            ),
            parents={"invoice_record_id": "finance_invoices"},
        ),
    )
}

SYSTEMS = ("sales", "service", "finance")


def datasets_of(system: str) -> list[Dataset]:
    if system not in SYSTEMS:
        raise ValueError(f"unknown source system {system!r}; expected one of {', '.join(SYSTEMS)}")
    return [d for d in DATASETS.values() if d.system == system]
