"""Baseline: landing (raw_*) and staging (stg_*) tables for the eleven source datasets, and the run log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Landing tables keep every source value as text (nothing is lost before validation).
RAW_TABLES: dict[str, list[str]] = {
    "raw_sales_customers": [
        "source_system",
        "source_record_id",
        "customer_name",
        "uscc",
        "legal_representative",
        "industry",
        "province",
        "city",
        "address",
        "scale",
        "employee_count",
        "annual_revenue_cny",
        "phone",
        "email",
        "account_manager",
        "account_manager_email",
        "created_at",
        "updated_at",
        "batch_id",
    ],
    "raw_sales_contacts": [
        "source_system",
        "source_record_id",
        "customer_record_id",
        "contact_name",
        "title",
        "mobile_phone",
        "office_phone",
        "email",
        "birth_date",
        "relationship_status",
        "is_key_person",
        "updated_at",
        "batch_id",
    ],
    "raw_sales_orders": [
        "source_system",
        "source_record_id",
        "customer_record_id",
        "order_date",
        "order_status",
        "created_at",
        "batch_id",
    ],
    "raw_sales_order_lines": [
        "source_system",
        "source_record_id",
        "order_record_id",
        "product_code",
        "product_name",
        "quantity",
        "amount_cny",
        "cost_cny",
        "batch_id",
    ],
    "raw_service_accounts": [
        "source_system",
        "source_record_id",
        "customer_name",
        "uscc",
        "phone",
        "email",
        "address",
        "updated_at",
        "batch_id",
    ],
    "raw_service_tickets": [
        "source_system",
        "source_record_id",
        "customer_record_id",
        "opened_at",
        "channel",
        "category",
        "touchpoint",
        "first_response_at",
        "resolved_at",
        "ticket_status",
        "subject",
        "batch_id",
    ],
    "raw_service_surveys": [
        "source_system",
        "source_record_id",
        "ticket_record_id",
        "customer_record_id",
        "answered_at",
        "csat_score",
        "nps_score",
        "comment",
        "batch_id",
    ],
    "raw_service_contact_log": [
        "source_system",
        "source_record_id",
        "customer_record_id",
        "contacted_at",
        "contact_type",
        "staff_name",
        "summary",
        "batch_id",
    ],
    "raw_finance_accounts": [
        "source_system",
        "source_record_id",
        "customer_name",
        "uscc",
        "phone",
        "address",
        "credit_limit_cny",
        "updated_at",
        "batch_id",
    ],
    "raw_finance_invoices": [
        "source_system",
        "source_record_id",
        "customer_record_id",
        "invoice_date",
        "due_date",
        "amount_cny",
        "batch_id",
    ],
    "raw_finance_payments": [
        "source_system",
        "source_record_id",
        "invoice_record_id",
        "customer_record_id",
        "paid_date",
        "amount_cny",
        "batch_id",
    ],
}

# Staging tables hold validated rows, typed.
STAGING_TABLES: dict[str, list[tuple[str, str]]] = {
    "stg_sales_customers": [
        ("source_system", "text"),
        ("source_record_id", "text"),
        ("customer_name", "text"),
        ("uscc", "text"),
        ("legal_representative", "text"),
        ("industry", "text"),
        ("province", "text"),
        ("city", "text"),
        ("address", "text"),
        ("scale", "text"),
        ("employee_count", "int"),
        ("annual_revenue_cny", "float"),
        ("phone", "text"),
        ("email", "text"),
        ("account_manager", "text"),
        ("account_manager_email", "text"),
        ("created_at", "datetime"),
        ("updated_at", "datetime"),
        ("batch_id", "text"),
    ],
    "stg_sales_contacts": [
        ("source_system", "text"),
        ("source_record_id", "text"),
        ("customer_record_id", "text"),
        ("contact_name", "text"),
        ("title", "text"),
        ("mobile_phone", "text"),
        ("office_phone", "text"),
        ("email", "text"),
        ("birth_date", "date"),
        ("relationship_status", "text"),
        ("is_key_person", "bool"),
        ("updated_at", "datetime"),
        ("batch_id", "text"),
    ],
    "stg_sales_orders": [
        ("source_system", "text"),
        ("source_record_id", "text"),
        ("customer_record_id", "text"),
        ("order_date", "date"),
        ("order_status", "text"),
        ("created_at", "datetime"),
        ("batch_id", "text"),
    ],
    "stg_sales_order_lines": [
        ("source_system", "text"),
        ("source_record_id", "text"),
        ("order_record_id", "text"),
        ("product_code", "text"),
        ("product_name", "text"),
        ("quantity", "float"),
        ("amount_cny", "float"),
        ("cost_cny", "float"),
        ("batch_id", "text"),
    ],
    "stg_service_accounts": [
        ("source_system", "text"),
        ("source_record_id", "text"),
        ("customer_name", "text"),
        ("uscc", "text"),
        ("phone", "text"),
        ("email", "text"),
        ("address", "text"),
        ("updated_at", "datetime"),
        ("batch_id", "text"),
    ],
    "stg_service_tickets": [
        ("source_system", "text"),
        ("source_record_id", "text"),
        ("customer_record_id", "text"),
        ("opened_at", "datetime"),
        ("channel", "text"),
        ("category", "text"),
        ("touchpoint", "text"),
        ("first_response_at", "datetime"),
        ("resolved_at", "datetime"),
        ("ticket_status", "text"),
        ("subject", "text"),
        ("batch_id", "text"),
    ],
    "stg_service_surveys": [
        ("source_system", "text"),
        ("source_record_id", "text"),
        ("ticket_record_id", "text"),
        ("customer_record_id", "text"),
        ("answered_at", "datetime"),
        ("csat_score", "int"),
        ("nps_score", "int"),
        ("comment", "text"),
        ("batch_id", "text"),
    ],
    "stg_service_contact_log": [
        ("source_system", "text"),
        ("source_record_id", "text"),
        ("customer_record_id", "text"),
        ("contacted_at", "datetime"),
        ("contact_type", "text"),
        ("staff_name", "text"),
        ("summary", "text"),
        ("batch_id", "text"),
    ],
    "stg_finance_accounts": [
        ("source_system", "text"),
        ("source_record_id", "text"),
        ("customer_name", "text"),
        ("uscc", "text"),
        ("phone", "text"),
        ("address", "text"),
        ("credit_limit_cny", "float"),
        ("updated_at", "datetime"),
        ("batch_id", "text"),
    ],
    "stg_finance_invoices": [
        ("source_system", "text"),
        ("source_record_id", "text"),
        ("customer_record_id", "text"),
        ("invoice_date", "date"),
        ("due_date", "date"),
        ("amount_cny", "float"),
        ("batch_id", "text"),
    ],
    "stg_finance_payments": [
        ("source_system", "text"),
        ("source_record_id", "text"),
        ("invoice_record_id", "text"),
        ("customer_record_id", "text"),
        ("paid_date", "date"),
        ("amount_cny", "float"),
        ("batch_id", "text"),
    ],
}

TYPES = {
    "text": sa.Text,
    "int": sa.BigInteger,
    "float": sa.Float,
    "date": sa.Date,
    "datetime": sa.DateTime,
    "bool": sa.Boolean,
}


def _create_or_extend(inspector, table: str, *columns: sa.Column) -> None:
    """Create ``table``; on a warehouse where a stage already created it, add what it lacks."""
    if not inspector.has_table(table):
        op.create_table(table, *columns)
        return
    present = {column["name"] for column in inspector.get_columns(table)}
    for column in columns:
        if column.name not in present:
            op.add_column(table, column)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, columns in RAW_TABLES.items():
        _create_or_extend(
            inspector,
            table,
            *[sa.Column(name, sa.Text()) for name in columns],
            sa.Column("extracted_at", sa.DateTime()),
        )
    for table, typed in STAGING_TABLES.items():
        _create_or_extend(
            inspector,
            table,
            *[sa.Column(name, TYPES[kind]()) for name, kind in typed],
            sa.Column("extracted_at", sa.DateTime()),
        )
        op.create_index(
            f"ix_{table}_source_record_id", table, ["source_record_id"], if_not_exists=True
        )
    _create_or_extend(
        inspector,
        "run_log",
        sa.Column("batch_id", sa.Text(), nullable=False),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("quarter", sa.Text()),
        sa.Column("status", sa.Text()),
        sa.Column("rows_in", sa.BigInteger()),
        sa.Column("rows_out", sa.BigInteger()),
        sa.Column("seconds", sa.Float()),
        sa.Column("error", sa.Text()),
    )


def downgrade() -> None:
    op.drop_table("run_log")
    for table in [*STAGING_TABLES, *RAW_TABLES]:
        op.drop_table(table)
