"""Demo source generator: three source systems that describe the same companies.

``generate_demo_sources`` writes what the sales, service and finance systems of a
Chinese company would hold (raw names and vocabularies of docs/sources.md) plus the
ground truth that later stages are scored on.

Ground-truth choices worth knowing:

* An *entity* is a real company. Every company has one ``crm_customer`` record; ~3%
  have a second one (a forgotten duplicate, newer ``cust_no``, name variation, its
  own key contact). ~78% of buyers (30% of prospects) have a service ``account``;
  every company with at least one invoice has a finance account.
* Finding defects are recorded only on the row that carries them: sales customer
  records (``sales_customers``), key persons (``sales_contacts``) and contact-log rows
  (``service_contact_log``). Each sales record and each contact has at most one.
  Blank or mistyped USCCs, other phone formats and name variants in the service and
  finance customer lists are matching work, not defects, and are not listed. A
  duplicate sales record is judged on its own fields like any other record (it is
  often without USCC or stale, and then listed).
* ``stale_file``: ``updated_time`` is at least 120 days before as_of; every other
  record was updated within the last 60 days, so any staleness cut between 61 and
  119 days (e.g. "one quarter") gives the same answer.
* ``key_contact_missing``: the record has no ``crm_contact`` with ``is_key = 1``.
  ``key_contact_phone_missing``: a key person with neither ``mobile`` nor
  ``office_tel``. A non-key person without any phone is legitimate.
* ``phone_invalid``: after removing spaces, hyphens, brackets and a ``转NNN``
  extension, the phone is not a valid mainland number (digits missing or extra,
  letters typed). ``email_invalid``: not ``local@domain.tld``.
* Quarantine defects are extra rows cloned from good rows with one field broken
  (see ``pipeline.demo.defects``); they have no child rows. ``unknown_*`` refers to a
  key that does not exist in the parent table at all. ``missing_required`` blanks a
  customer/order/invoice reference, the event date or the amount, never the row's
  own key. ``date_out_of_range`` uses 1900/1970/2098/2099 dates (payments: only
  future ones, so that the row is not also ``payment_before_invoice``).
* Legitimately unusual rows are not defects: open tickets without response,
  surveys without ticket (relationship surveys), lines without cost, orders without
  invoice, open invoices, partial payments, prospects without orders.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.demo import activity, companies, defects, text, vocab
from pipeline.demo.defects import Injection
from pipeline.demo.timeline import HISTORY_QUARTERS, build_timeline
from pipeline.demo.writers import (
    Column,
    Key,
    Lookup,
    render,
    write_csv,
    write_sqlite,
    write_xlsx,
)
from pipeline.extract import changelog

logger = logging.getLogger(__name__)

_STREAMS = (
    "entities",
    "lifecycle",
    "sales",
    "contacts",
    "service",
    "orders",
    "lines",
    "finance",
    "tickets",
    "surveys",
    "contact_log",
    "defects",
    "staff",
)

FIRST_INVOICE_NUMBER = 10_000_001
SERVICE_STAFF = 12


def _key_width(default: int, rows: int) -> int:
    """Digits for keys of a table with ``rows`` rows, leaving room for unknown references."""
    largest = rows + max(20, rows // 20) + 1
    return max(default, len(str(largest)))


def _staff_pool(managers: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Account managers (first ``managers``) then service staff: (name, e-mail)."""
    pool: list[tuple[str, str]] = []
    names: set[str] = set()
    while len(pool) < managers + SERVICE_STAFF:
        name, pinyin = text.person_name(rng)
        if name in names:
            continue
        names.add(name)
        pool.append((name, f"{pinyin}@{vocab.OUR_COMPANY_DOMAIN}"))
    return pool


def _truth_rows(
    system: str, dataset: str, keys: np.ndarray, codes: np.ndarray, key: Key, action: str
) -> pd.DataFrame:
    bad = codes != ""
    return pd.DataFrame(
        {
            "source_system": system,
            "dataset": dataset,
            "source_record_id": _render_keys(keys[bad], key),
            "defect": codes[bad].astype(str),
            "action": action,
        }
    )


def _render_keys(keys: np.ndarray, key: Key) -> np.ndarray:
    return render(np.asarray(keys), key)


def _first_day(entity: np.ndarray, day: np.ndarray, n: int) -> np.ndarray:
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, entity, day)
    return first


def generate_demo_sources(
    out_dir: Path,
    customers: int = 2000,
    seed: int = 42,
    as_of: date | None = None,
    history_quarters: int = HISTORY_QUARTERS,
) -> dict:
    """Write sales.db, service.db, finance/ and truth/ under out_dir; return the manifest dict.

    Deterministic for (customers, seed, as_of, history_quarters); an existing out_dir is
    overwritten. ``history_quarters`` whole quarters of history precede as_of's quarter.
    ``as_of`` (the last day with data) is required: the caller passes today's date.
    """
    if as_of is None:
        raise ValueError("as_of is required: pass the last day with data (the CLI passes today)")
    if customers < 1:
        raise ValueError("customers must be at least 1")
    if history_quarters < 1:
        raise ValueError("history_quarters must be at least 1")
    out_dir = Path(out_dir)
    tl = build_timeline(as_of, history_quarters)
    rng = {name: np.random.default_rng([seed, i]) for i, name in enumerate(_STREAMS)}
    logger.info("generating %d companies, seed %d, %s..%s", customers, seed, tl.start, tl.as_of)

    entities = companies.build_entities(customers, rng["entities"])
    size = entities["size"].to_numpy()
    life = activity.lifecycle(size, entities["scale"].to_numpy(), tl, rng["lifecycle"])
    entity_rows = entities.to_dict("records")
    n_managers = int(np.clip(20 + customers // 5000, 20, 40))
    staff = _staff_pool(n_managers, rng["staff"])

    customers_table = companies.sales_customers(
        entity_rows,
        life["created_day"].to_numpy(),
        life["duplicate_created_day"].to_numpy(),
        staff[:n_managers],
        tl,
        rng["sales"],
    )
    contacts_table = companies.sales_contacts(customers_table, entity_rows, tl, rng["contacts"])
    primary = customers_table[~customers_table["_is_duplicate"]]
    primary_record = np.full(customers, -1)
    primary_record[primary["_entity"].to_numpy()] = primary["cust_no"].to_numpy()
    duplicates = customers_table[customers_table["_is_duplicate"]]
    duplicate_record = np.full(customers, -1)
    duplicate_record[duplicates["_entity"].to_numpy()] = duplicates["cust_no"].to_numpy()
    manager_of_entity = np.full(customers, -1)
    manager_of_entity[primary["_entity"].to_numpy()] = primary["_manager"].to_numpy()
    logger.info(
        "sales customers: %d records, %d contacts", len(customers_table), len(contacts_table)
    )

    served = np.flatnonzero(life["has_service"].to_numpy())
    service_created = np.maximum(life["created_day"].to_numpy(), life["start_day"].to_numpy() - 60)[
        served
    ]
    accounts_table = companies.service_accounts(
        entity_rows, served, service_created, tl, rng["service"]
    )
    account_of_entity = np.full(customers, -1)
    account_of_entity[accounts_table["_entity"].to_numpy()] = accounts_table[
        "account_id"
    ].to_numpy()

    order_base = activity.orders(life, size, primary_record, duplicate_record, tl, rng["orders"])
    catalogue = activity.products(rng["orders"])
    line_base = activity.order_lines(order_base, size, catalogue, rng["lines"])
    order_total = np.bincount(
        line_base["order_no"], weights=line_base["amount"], minlength=len(order_base["_day"])
    )
    invoice_base = activity.invoices(order_base, order_total, life, tl, rng["finance"])
    payment_base = activity.payments(invoice_base, life, tl, rng["finance"])
    first_invoice = _first_day(invoice_base["_entity"], invoice_base["_day"], customers)
    invoiced = np.flatnonzero(first_invoice < np.iinfo(np.int64).max)
    finance_table = companies.finance_accounts(
        entity_rows, invoiced, first_invoice[invoiced], tl, rng["finance"]
    )
    finance_of_entity = np.full(customers, -1)
    finance_of_entity[finance_table["_entity"].to_numpy()] = finance_table["客户编号"].to_numpy()
    invoice_base["客户编号"] = finance_of_entity[invoice_base["客户编号"]]
    payment_base["客户编号"] = finance_of_entity[payment_base["客户编号"]]
    logger.info(
        "orders %d, lines %d, invoices %d, payments %d",
        len(order_base["_day"]),
        len(line_base["qty"]),
        len(invoice_base["_day"]),
        len(payment_base["_sort"]),
    )

    ticket_base = activity.tickets(life, size, account_of_entity, customers, tl, rng["tickets"])
    survey_base = activity.surveys(ticket_base, account_of_entity, tl, rng["surveys"])
    log_base = activity.contact_log(
        life,
        size,
        account_of_entity,
        manager_of_entity,
        len(staff),
        customers,
        tl,
        rng["contact_log"],
    )
    logger.info(
        "tickets %d, surveys %d, contact log %d",
        len(ticket_base["_sort"]),
        len(survey_base["_sort"]),
        len(log_base["_sort"]),
    )

    rd = rng["defects"]
    n_records = int(customers_table["cust_no"].max())
    n_accounts = len(accounts_table)
    n_finance = len(finance_table)

    orders_final = defects.finalize(
        order_base,
        [
            Injection("unknown_customer", defects.unknown_reference("cust_no", n_records + 1)),
            Injection("date_out_of_range", defects.out_of_range("order_date")),
            Injection("missing_required", defects.blank_one_of("cust_no", "order_date")),
        ],
        "order_no",
        1,
        rd,
        touch=_order_completed_since,
    )
    line_base["order_no"] = orders_final.key_of_base[line_base["order_no"]]
    line_base["_sort"] = line_base["order_no"] * 1000 + line_base["_sort"]
    n_orders = len(orders_final.defect)
    lines_final = defects.finalize(
        line_base,
        [
            Injection("unknown_order", defects.unknown_reference("order_no", n_orders + 1)),
            Injection("negative_amount", defects.negate("amount", clear="cost")),
            Injection("cost_exceeds_amount", _cost_exceeds_amount),
            Injection("missing_required", defects.blank_one_of("order_no", "amount")),
        ],
        "line_id",
        1,
        rd,
    )
    invoices_final = defects.finalize(
        invoice_base,
        [
            Injection("unknown_customer", defects.unknown_reference("客户编号", n_finance + 1)),
            Injection("negative_amount", defects.negate("金额(元)")),
            Injection(
                "date_out_of_range", defects.out_of_range("开票日期", then=_due_after_invoice)
            ),
            Injection("missing_required", defects.blank_one_of("客户编号", "开票日期", "金额(元)")),
        ],
        "发票号",
        FIRST_INVOICE_NUMBER,
        rd,
        touch=_due_date_extended,
    )
    payment_base["发票号"] = invoices_final.key_of_base[payment_base["发票号"]]
    last_invoice = FIRST_INVOICE_NUMBER + len(invoices_final.defect)
    payments_final = defects.finalize(
        payment_base,
        [
            Injection("unknown_invoice", defects.unknown_reference("发票号", last_invoice)),
            Injection("negative_amount", defects.negate("金额(元)")),
            Injection("payment_before_invoice", defects.before("收款日期", "_invoice_date", 60)),
            Injection("date_out_of_range", defects.out_of_range("收款日期", future_only=True)),
            Injection("missing_required", defects.blank_one_of("发票号", "收款日期", "金额(元)")),
        ],
        "收款单号",
        1,
        rd,
    )
    tickets_final = defects.finalize(
        ticket_base,
        [
            Injection("unknown_customer", defects.unknown_reference("account_id", n_accounts + 1)),
            Injection(
                "response_before_open",
                defects.before("first_response_at", "opened_at", 3, then=_at_least_in_progress),
            ),
            Injection(
                "resolved_before_open",
                defects.before("resolved_at", "opened_at", 3, then=_resolved_status),
            ),
            Injection(
                "date_out_of_range", defects.out_of_range("opened_at", then=_not_yet_answered)
            ),
            Injection("missing_required", defects.blank_one_of("account_id", "opened_at")),
        ],
        "ticket_id",
        1,
        rd,
        touch=_subject_reworded,
    )
    survey_base["ticket_id"] = np.where(
        survey_base["ticket_id"] >= 0,
        tickets_final.key_of_base[np.maximum(survey_base["ticket_id"], 0)],
        -1,
    )
    surveys_final = defects.finalize(
        survey_base,
        [
            Injection("unknown_customer", defects.unknown_reference("account_id", n_accounts + 1)),
            Injection("csat_out_of_range", defects.replace("csat", (0, 6, 7))),
            Injection("nps_out_of_range", defects.replace("nps", (11, -1, 12))),
            Injection("date_out_of_range", defects.out_of_range("answered_at")),
            Injection("missing_required", defects.blank_one_of("account_id", "answered_at")),
        ],
        "survey_id",
        1,
        rd,
    )
    blank_summary = log_base["summary"] < 0
    log_base["summary"][blank_summary] = np.where(rd.random(int(blank_summary.sum())) < 0.5, -1, -2)
    logs_final = defects.finalize(
        log_base,
        [
            Injection("unknown_customer", defects.unknown_reference("account_id", n_accounts + 1)),
            Injection("date_out_of_range", defects.out_of_range("contact_time")),
            Injection("missing_required", defects.blank_one_of("account_id", "contact_time")),
        ],
        "log_id",
        1,
        rd,
        eligible=~blank_summary,
    )
    report_missing = (logs_final.table["summary"] < 0) & (logs_final.defect == "")

    schemas = _schemas(
        n_records=n_records,
        n_orders=n_orders,
        n_accounts=n_accounts,
        n_finance=n_finance,
        catalogue=catalogue,
        staff=staff,
    )
    _reset(out_dir)
    write_sqlite(
        out_dir / "sales.db",
        [
            ("crm_customer", schemas["crm_customer"], customers_table),
            ("crm_contact", schemas["crm_contact"], contacts_table),
            ("sales_order", schemas["sales_order"], orders_final.table),
            ("sales_order_line", schemas["sales_order_line"], lines_final.table),
        ],
    )
    logger.info("wrote %s", out_dir / "sales.db")
    write_sqlite(
        out_dir / "service.db",
        [
            ("account", schemas["account"], accounts_table),
            ("ticket", schemas["ticket"], tickets_final.table),
            ("survey", schemas["survey"], surveys_final.table),
            ("contact_log", schemas["contact_log"], logs_final.table),
        ],
    )
    logger.info("wrote %s", out_dir / "service.db")
    # Both systems log their changes from here on, as a source set up for incremental
    # extracts would (pipeline.extract.changelog).
    for name, tables in (
        ("sales.db", ["crm_customer", "crm_contact", "sales_order", "sales_order_line"]),
        ("service.db", ["account", "ticket", "survey", "contact_log"]),
    ):
        changelog.install(out_dir / name, tables)
    write_xlsx(
        out_dir / "finance" / "accounts.xlsx", "客户", schemas["accounts"], finance_table, as_of
    )
    write_csv(out_dir / "finance" / "invoices.csv", schemas["invoices"], invoices_final.table)
    write_csv(out_dir / "finance" / "payments.csv", schemas["payments"], payments_final.table)
    logger.info("wrote %s", out_dir / "finance")

    keys = {name: columns[0].render for name, columns in schemas.items()}
    entities_truth = pd.concat(
        [
            pd.DataFrame(
                {
                    "source_system": "sales",
                    "source_record_id": _render_keys(
                        customers_table["cust_no"].to_numpy(), keys["crm_customer"]
                    ),
                    "entity_id": entities["entity_id"].to_numpy()[
                        customers_table["_entity"].to_numpy()
                    ],
                }
            ),
            pd.DataFrame(
                {
                    "source_system": "service",
                    "source_record_id": _render_keys(
                        accounts_table["account_id"].to_numpy(), keys["account"]
                    ),
                    "entity_id": entities["entity_id"].to_numpy()[
                        accounts_table["_entity"].to_numpy()
                    ],
                }
            ),
            pd.DataFrame(
                {
                    "source_system": "finance",
                    "source_record_id": _render_keys(
                        finance_table["客户编号"].to_numpy(), keys["accounts"]
                    ),
                    "entity_id": entities["entity_id"].to_numpy()[
                        finance_table["_entity"].to_numpy()
                    ],
                }
            ),
        ],
        ignore_index=True,
    )
    quarantine = "quarantine"
    defect_truth = pd.concat(
        [
            _truth_rows(
                "sales",
                "sales_customers",
                customers_table["cust_no"].to_numpy(),
                customers_table["_defect"].to_numpy(dtype=object),
                keys["crm_customer"],
                "finding",
            ),
            _truth_rows(
                "sales",
                "sales_contacts",
                contacts_table["contact_no"].to_numpy(),
                contacts_table["_defect"].to_numpy(dtype=object),
                keys["crm_contact"],
                "finding",
            ),
            _truth_rows(
                "sales",
                "sales_orders",
                orders_final.table["order_no"],
                orders_final.defect,
                keys["sales_order"],
                quarantine,
            ),
            _truth_rows(
                "sales",
                "sales_order_lines",
                lines_final.table["line_id"],
                lines_final.defect,
                Key("", 1),
                quarantine,
            ),
            _truth_rows(
                "service",
                "service_tickets",
                tickets_final.table["ticket_id"],
                tickets_final.defect,
                keys["ticket"],
                quarantine,
            ),
            _truth_rows(
                "service",
                "service_surveys",
                surveys_final.table["survey_id"],
                surveys_final.defect,
                keys["survey"],
                quarantine,
            ),
            _truth_rows(
                "service",
                "service_contact_log",
                logs_final.table["log_id"],
                logs_final.defect,
                keys["contact_log"],
                quarantine,
            ),
            _truth_rows(
                "service",
                "service_contact_log",
                logs_final.table["log_id"],
                np.where(report_missing, "contact_report_missing", ""),
                keys["contact_log"],
                "finding",
            ),
            _truth_rows(
                "finance",
                "finance_invoices",
                invoices_final.table["发票号"],
                invoices_final.defect,
                keys["invoices"],
                quarantine,
            ),
            _truth_rows(
                "finance",
                "finance_payments",
                payments_final.table["收款单号"],
                payments_final.defect,
                keys["payments"],
                quarantine,
            ),
        ],
        ignore_index=True,
    ).sort_values(["source_system", "dataset", "source_record_id", "defect"], ignore_index=True)

    truth_dir = out_dir / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    entities_truth.to_csv(truth_dir / "entities.csv", index=False, lineterminator="\n")
    defect_truth.to_csv(truth_dir / "defects.csv", index=False, lineterminator="\n")

    row_counts = {
        "sales_customers": len(customers_table),
        "sales_contacts": len(contacts_table),
        "sales_orders": len(orders_final.defect),
        "sales_order_lines": len(lines_final.defect),
        "service_accounts": len(accounts_table),
        "service_tickets": len(tickets_final.defect),
        "service_surveys": len(surveys_final.defect),
        "service_contact_log": len(logs_final.defect),
        "finance_accounts": len(finance_table),
        "finance_invoices": len(invoices_final.defect),
        "finance_payments": len(payments_final.defect),
    }
    defect_counts: dict[str, dict[str, int]] = {}
    for (dataset, code), count in defect_truth.groupby(["dataset", "defect"]).size().items():
        defect_counts.setdefault(dataset, {})[code] = int(count)
    manifest = {
        "generator": "crm-pipeline demo-data",
        "seed": seed,
        "customers": customers,
        "as_of": as_of.isoformat(),
        "history_start": tl.start.isoformat(),
        "entities": customers,
        "row_counts": row_counts,
        "defect_counts": defect_counts,
    }
    (truth_dir / "manifest.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    logger.info(
        "wrote ground truth: %d entity records, %d defect rows",
        len(entities_truth),
        len(defect_truth),
    )
    return manifest


def _reset(out_dir: Path) -> None:
    """Remove what a previous run wrote, leaving anything else in out_dir alone."""
    for name in ("sales.db", "service.db"):
        (out_dir / name).unlink(missing_ok=True)
    for name in ("finance", "truth"):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    (out_dir / "finance").mkdir(parents=True)


def _order_completed_since(table: activity.Table, rng: np.random.Generator) -> None:
    """A re-exported order that was open (执行中) is completed in the later copy."""
    table["status"] = np.where(table["status"] == 2, 0, table["status"])


def _due_date_extended(table: activity.Table, rng: np.random.Generator) -> None:
    """A re-exported invoice carries an extended due date."""
    table["到期日"] = table["到期日"] + np.timedelta64(15, "D")


def _subject_reworded(table: activity.Table, rng: np.random.Generator) -> None:
    """A re-exported ticket has its subject reworded (same category and touchpoint)."""
    table["subject"] = (table["subject"] // 5) * 5 + (table["subject"] + 1) % 5


def _cost_exceeds_amount(table: activity.Table, rng: np.random.Generator) -> None:
    table["cost"] = np.round(table["amount"] * rng.uniform(1.1, 2.5, len(table["amount"])), 2)


def _due_after_invoice(table: activity.Table, rng: np.random.Generator) -> None:
    table["到期日"] = table["开票日期"] + np.timedelta64(30, "D")


def _at_least_in_progress(table: activity.Table, rng: np.random.Generator) -> None:
    table["status"] = np.maximum(table["status"], 1)


def _resolved_status(table: activity.Table, rng: np.random.Generator) -> None:
    table["status"] = np.full(len(table["status"]), 2)


def _not_yet_answered(table: activity.Table, rng: np.random.Generator) -> None:
    table["first_response_at"] = np.full(
        len(table["status"]), np.datetime64("NaT"), dtype="datetime64[s]"
    )
    table["resolved_at"] = table["first_response_at"].copy()
    table["status"] = np.zeros(len(table["status"]), dtype=table["status"].dtype)


def _schemas(
    n_records: int,
    n_orders: int,
    n_accounts: int,
    n_finance: int,
    catalogue: pd.DataFrame,
    staff: list[tuple[str, str]],
) -> dict[str, list[Column]]:
    """Raw columns of every source table (docs/sources.md), keyed by raw table/file name."""
    customer = Key("C", _key_width(6, n_records))
    order = Key("SO", _key_width(8, n_orders))
    account = Key("S", _key_width(5, n_accounts))
    finance = Key("F", _key_width(5, n_finance))
    invoice = Key("", 8)
    return {
        "crm_customer": [
            Column("cust_no", "TEXT PRIMARY KEY", customer),
            Column("cust_name", "TEXT", "text"),
            Column("credit_code", "TEXT", "text"),
            Column("legal_rep", "TEXT", "text"),
            Column("industry", "TEXT", "text"),
            Column("province", "TEXT", "text"),
            Column("city", "TEXT", "text"),
            Column("address", "TEXT", "text"),
            Column("scale", "TEXT", "text"),
            Column("staff_count", "INTEGER", "int"),
            Column("annual_revenue_wan", "REAL", "money"),
            Column("tel", "TEXT", "text"),
            Column("email", "TEXT", "text"),
            Column("manager_name", "TEXT", "text"),
            Column("manager_email", "TEXT", "text"),
            Column("created_time", "TEXT", "timestamp"),
            Column("updated_time", "TEXT", "timestamp"),
        ],
        "crm_contact": [
            Column("contact_no", "TEXT PRIMARY KEY", Key("CT", 7)),
            Column("cust_no", "TEXT", customer),
            Column("contact_name", "TEXT", "text"),
            Column("title", "TEXT", "text"),
            Column("mobile", "TEXT", "text"),
            Column("office_tel", "TEXT", "text"),
            Column("email", "TEXT", "text"),
            Column("birthday", "TEXT", "date"),
            Column("relation", "TEXT", "text"),
            Column("is_key", "INTEGER", "int"),
            Column("updated_time", "TEXT", "timestamp"),
        ],
        "sales_order": [
            Column("order_no", "TEXT", order),
            Column("cust_no", "TEXT", customer),
            Column("order_date", "TEXT", "date"),
            Column("status", "TEXT", Lookup(vocab.ORDER_STATUSES)),
            Column("created_time", "TEXT", "timestamp"),
        ],
        "sales_order_line": [
            Column("line_id", "INTEGER", "int"),
            Column("order_no", "TEXT", order),
            Column("product_code", "TEXT", Lookup(tuple(catalogue["product_code"])), "product"),
            Column("product_name", "TEXT", Lookup(tuple(catalogue["product_name"])), "product"),
            Column("qty", "INTEGER", "int"),
            Column("amount", "REAL", "money"),
            Column("cost", "REAL", "money"),
        ],
        "account": [
            Column("account_id", "TEXT PRIMARY KEY", account),
            Column("account_name", "TEXT", "text"),
            Column("uscc", "TEXT", "text"),
            Column("phone", "TEXT", "text"),
            Column("email", "TEXT", "text"),
            Column("address", "TEXT", "text"),
            Column("modified_at", "TEXT", "timestamp"),
        ],
        "ticket": [
            Column("ticket_id", "TEXT", Key("T", 8)),
            Column("account_id", "TEXT", account),
            Column("opened_at", "TEXT", "timestamp"),
            Column("channel", "TEXT", Lookup(vocab.CHANNELS)),
            Column("category", "TEXT", Lookup(vocab.CATEGORIES)),
            Column("touchpoint", "TEXT", Lookup(vocab.TOUCHPOINTS)),
            Column("first_response_at", "TEXT", "timestamp"),
            Column("resolved_at", "TEXT", "timestamp"),
            Column("status", "TEXT", Lookup(vocab.TICKET_STATUSES)),
            Column("subject", "TEXT", Lookup(tuple(activity.subject_texts()))),
        ],
        "survey": [
            Column("survey_id", "TEXT", Key("SV", 7)),
            Column("ticket_id", "TEXT", Key("T", 8)),
            Column("account_id", "TEXT", account),
            Column("answered_at", "TEXT", "timestamp"),
            Column("csat", "INTEGER", "int"),
            Column("nps", "INTEGER", "int"),
            Column(
                "comment", "TEXT", Lookup(vocab.SURVEY_COMMENTS_GOOD + vocab.SURVEY_COMMENTS_BAD)
            ),
        ],
        "contact_log": [
            Column("log_id", "TEXT", Key("LG", 8)),
            Column("account_id", "TEXT", account),
            Column("contact_time", "TEXT", "timestamp"),
            Column("contact_type", "TEXT", Lookup(vocab.CONTACT_TYPES)),
            Column("staff", "TEXT", Lookup(tuple(name for name, _ in staff))),
            Column("summary", "TEXT", Lookup(vocab.CONTACT_SUMMARIES)),
        ],
        "accounts": [
            Column("客户编号", "TEXT", finance),
            Column("客户名称", "TEXT", "text"),
            Column("纳税人识别号", "TEXT", "text"),
            Column("联系电话", "TEXT", "text"),
            Column("地址", "TEXT", "text"),
            Column("信用额度(元)", "REAL", "money"),
            Column("更新日期", "TEXT", "date"),
        ],
        "invoices": [
            Column("发票号", "TEXT", invoice),
            Column("客户编号", "TEXT", finance),
            Column("开票日期", "TEXT", "date"),
            Column("到期日", "TEXT", "date"),
            Column("金额(元)", "REAL", "money"),
        ],
        "payments": [
            Column("收款单号", "TEXT", Key("SK", 8)),
            Column("发票号", "TEXT", invoice),
            Column("客户编号", "TEXT", finance),
            Column("收款日期", "TEXT", "date"),
            Column("金额(元)", "REAL", "money"),
        ],
    }


__all__ = ["generate_demo_sources"]
