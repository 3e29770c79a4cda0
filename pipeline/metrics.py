"""Stage ``compute_metrics``: customer tiers and satisfaction metrics per quarter, with history.

Reads the ``stg_*`` tables and the resolved customers (``core_customer_xref``,
``core_customers``), maps every source record to its golden ``customer_id`` and replaces,
for each computed quarter, the partitions ``quarter=<q>`` of:

- ``mart_customer_quarter``: one row per customer per quarter (tiers, grade, stage, flags).
- ``mart_metrics``: one row per (quarter, metric, dimension, segment), long format.
- ``mart_sla_offenders``: worst first-response offenders, one row per customer.
- ``mart_tier_migration``: one row per (from_tier, to_tier) against the previous quarter.
- ``mart_both_ends``: the leadership list of big and risk customers.

Before the resolution stage has run, each source record counts as its own customer
(a warning is logged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.quarters import Quarter
from pipeline.settings import Settings
from pipeline.stages import StageContext, StageResult
from pipeline.transform import satisfaction, tiers
from pipeline.warehouse import read_query, read_table, replace_partition, table_exists

log = logging.getLogger(__name__)

OUTPUT_TABLES = (
    "mart_customer_quarter",
    "mart_metrics",
    "mart_sla_offenders",
    "mart_tier_migration",
    "mart_both_ends",
)


@dataclass(frozen=True)
class MetricInputs:
    """Everything the quarterly computation needs, keyed on golden ``customer_id``."""

    customers: pd.DataFrame  # customer_id, region, industry, account_manager
    sales: pd.DataFrame  # customer_id, order_id, order_date, amount_cny, cost_cny
    invoices: pd.DataFrame  # invoice_id, customer_id, invoice_date, due_date, amount_cny
    payments: pd.DataFrame  # invoice_id, paid_date, amount_cny
    tickets: pd.DataFrame  # ticket_id, customer_id, opened_at, channel, category, ...
    surveys: pd.DataFrame  # customer_id, answered_at, csat_score, nps_score
    contacts: pd.DataFrame  # customer_id, contacted_at


def _map_ids(records: pd.Series, system: str, xref: pd.DataFrame | None) -> pd.Series:
    if xref is None:
        return records.astype(object)
    lookup = xref[xref["source_system"] == system].set_index("source_record_id")["customer_id"]
    return records.map(lookup).astype(object)


def build_inputs(
    stg: dict[str, pd.DataFrame], xref: pd.DataFrame | None, core: pd.DataFrame | None
) -> MetricInputs:
    """Map the staging frames onto golden customers (pure). Without ``xref`` every source
    record is its own customer; records missing from ``xref`` are dropped with a warning."""
    sales_customers = stg["sales_customers"]
    if core is not None:
        customers = core.copy()
        if "region" not in customers.columns:
            customers["region"] = customers.get("province")
    else:
        customers = pd.DataFrame(
            {
                "customer_id": _map_ids(sales_customers["source_record_id"], "sales", xref),
                "region": sales_customers["province"],
                "industry": sales_customers["industry"],
                "account_manager": sales_customers["account_manager"],
            }
        )
        others = []
        for system, name in (("service", "service_accounts"), ("finance", "finance_accounts")):
            others.append(_map_ids(stg[name]["source_record_id"], system, xref))
        extra = pd.concat(others, ignore_index=True).dropna()
        extra = extra[~extra.isin(customers["customer_id"])].drop_duplicates()
        customers = pd.concat([customers, pd.DataFrame({"customer_id": extra})], ignore_index=True)
    for column in ("region", "industry", "account_manager"):
        if column not in customers.columns:
            customers[column] = None
    customers = customers.dropna(subset=["customer_id"]).drop_duplicates("customer_id")
    # Python strings, as in the frames mapped by _map_ids: pandas' Arrow-backed ``str`` is
    # slow to factorize and look up (isin) at 100,000 customers, and mixing the two in one
    # merge converts every time.
    customers = customers.astype({"customer_id": object})

    orders = stg["sales_orders"]
    orders = orders[orders["order_status"].fillna("") != "cancelled"]
    lines = stg["sales_order_lines"].merge(
        orders[["source_record_id", "customer_record_id", "order_date"]],
        left_on="order_record_id",
        right_on="source_record_id",
        suffixes=("_line", ""),
    )
    sales = pd.DataFrame(
        {
            "customer_id": _map_ids(lines["customer_record_id"], "sales", xref),
            "order_id": lines["order_record_id"],
            "order_date": lines["order_date"],
            "amount_cny": lines["amount_cny"].astype("float64"),
            "cost_cny": lines["cost_cny"].astype("float64"),
        }
    )
    if "contribution_cny" in lines:  # lines already summed per order (load_inputs)
        sales["contribution_cny"] = lines["contribution_cny"].astype("float64")
    inv = stg["finance_invoices"]
    invoices = pd.DataFrame(
        {
            "invoice_id": inv["source_record_id"],
            "customer_id": _map_ids(inv["customer_record_id"], "finance", xref),
            "invoice_date": inv["invoice_date"],
            "due_date": inv["due_date"],
            "amount_cny": inv["amount_cny"].astype("float64"),
        }
    )
    pay = stg["finance_payments"]
    payments = pd.DataFrame(
        {
            "invoice_id": pay["invoice_record_id"],
            "paid_date": pay["paid_date"],
            "amount_cny": pay["amount_cny"].astype("float64"),
        }
    )
    invoices, payments = tiers.with_invoice_keys(invoices, payments)
    tk = stg["service_tickets"]
    tickets = tk.rename(columns={"source_record_id": "ticket_id"}).assign(
        customer_id=_map_ids(tk["customer_record_id"], "service", xref)
    )
    sv = stg["service_surveys"]
    surveys = sv.assign(customer_id=_map_ids(sv["customer_record_id"], "service", xref))
    cl = stg["service_contact_log"]
    contacts = cl.assign(customer_id=_map_ids(cl["customer_record_id"], "service", xref))
    frames = {
        "sales": sales,
        "invoices": invoices,
        "tickets": tickets,
        "surveys": surveys,
        "contacts": contacts,
    }
    # Record ids as Python strings too: grouping on and counting Arrow-backed text
    # (distinct orders, duplicate invoice ids) was a third of the computation at 100,000
    # customers.
    for name, column in (
        ("sales", "order_id"),
        ("invoices", "invoice_id"),
        ("tickets", "ticket_id"),
    ):
        frames[name] = frames[name].astype({column: object})
    payments = payments.astype({"invoice_id": object})
    for name, frame in frames.items():
        unmapped = int(frame["customer_id"].isna().sum())
        if unmapped:
            log.warning(
                "%s: %d rows have no golden customer in core_customer_xref; left out",
                name,
                unmapped,
            )
            frames[name] = frame[frame["customer_id"].notna()]
    return MetricInputs(customers=customers, payments=payments, **frames)


def customer_quarter(
    inputs: MetricInputs,
    quarter: Quarter,
    settings: Settings,
    previous: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``mart_customer_quarter`` rows of one quarter (pure); ``previous``: the previous
    quarter's rows if already computed (their credit grades are reused)."""
    return tiers.customer_quarter(
        inputs.customers,
        inputs.sales,
        inputs.invoices,
        inputs.payments,
        inputs.tickets,
        inputs.contacts,
        quarter,
        settings.tiers,
        settings.timezone,
        None if previous is None else previous[["customer_id", "credit_grade"]],
    )


@dataclass
class QuarterCache:
    """Frames of quarters already computed, shared by consecutive quarters of one run: each
    quarter needs the two before it (customer rows) and the one before (its metrics)."""

    customers: dict[Quarter, pd.DataFrame] = field(default_factory=dict)
    metrics: dict[Quarter, pd.DataFrame] = field(default_factory=dict)

    def customer_quarter(
        self, inputs: MetricInputs, quarter: Quarter, settings: Settings
    ) -> pd.DataFrame:
        if quarter not in self.customers:
            previous = self.customers.get(quarter.previous())
            self.customers[quarter] = customer_quarter(inputs, quarter, settings, previous)
        return self.customers[quarter]

    def metrics_only(
        self, inputs: MetricInputs, quarter: Quarter, settings: Settings
    ) -> pd.DataFrame:
        if quarter not in self.metrics:
            current = self.customer_quarter(inputs, quarter, settings)
            previous = self.customer_quarter(inputs, quarter.previous(), settings)
            self.metrics[quarter] = _metrics_only(inputs, quarter, current, previous, settings)
        return self.metrics[quarter]


def _metrics_only(
    inputs: MetricInputs,
    quarter: Quarter,
    current: pd.DataFrame,
    previous: pd.DataFrame,
    settings: Settings,
) -> pd.DataFrame:
    activity = tiers.quarterly_purchases(inputs.sales, quarter, 2)
    status = satisfaction.customer_status(current, previous, activity)
    return satisfaction.quarter_metrics(
        inputs.surveys, inputs.tickets, status, quarter, settings.metrics, settings.timezone
    )


def compute_quarter(
    inputs: MetricInputs,
    quarter: Quarter,
    settings: Settings,
    history: QuarterCache | None = None,
) -> dict[str, pd.DataFrame]:
    """All output frames of one quarter (pure). ``history`` caches the frames of earlier
    quarters (computed here when missing, and added to the cache)."""
    cache = history if history is not None else QuarterCache()
    for q in (quarter.shift(-2), quarter.previous(), quarter):  # oldest first: grades reused
        cache.customer_quarter(inputs, q, settings)
    current, previous = cache.customers[quarter], cache.customers[quarter.previous()]
    metrics_now = cache.metrics_only(inputs, quarter, settings)
    metrics_prev = cache.metrics_only(inputs, quarter.previous(), settings)
    metrics = satisfaction.with_changes(metrics_now, metrics_prev, settings.metrics)
    metrics.insert(0, "quarter", str(quarter))
    offenders = satisfaction.sla_offenders(
        inputs.tickets, quarter, settings.metrics, settings.timezone, settings.tiers.both_ends_top_n
    )
    migration = tiers.tier_migration(current, previous)
    return {
        "mart_customer_quarter": current,
        "mart_metrics": metrics,
        "mart_sla_offenders": offenders,
        "mart_tier_migration": migration,
        "mart_both_ends": tiers.both_ends(current),
    }


STAGING = (
    "sales_customers",
    "sales_orders",
    "sales_order_lines",
    "service_accounts",
    "service_tickets",
    "service_surveys",
    "service_contact_log",
    "finance_accounts",
    "finance_invoices",
    "finance_payments",
)


def _as_datetimes(frame: pd.DataFrame) -> pd.DataFrame:
    """``*_at``/``*_date`` columns as datetimes: ``read_table`` leaves pandas 3 ``str``
    columns (not ``object``) as text."""
    for name in frame.columns:
        if name.endswith(("_at", "_date")) and frame[name].dtype.kind != "M":
            frame[name] = pd.to_datetime(frame[name], errors="coerce", format="mixed")
    return frame


# Lineage and free text: never used by the computations, and most of the bytes.
UNUSED_COLUMNS = frozenset(
    {"source_system", "batch_id", "extracted_at", "subject", "comment", "summary", "staff_name"}
)

# Order lines are summed per order in the warehouse: memory follows orders, not lines. The
# contribution (margin where the cost is known, else revenue) is summed line by line there.
ORDER_LINE_TOTALS = """
SELECT order_record_id,
       SUM(amount_cny) AS amount_cny,
       SUM(cost_cny) AS cost_cny,
       SUM(CASE WHEN cost_cny IS NULL THEN amount_cny ELSE amount_cny - cost_cny END)
           AS contribution_cny
FROM stg_sales_order_lines
GROUP BY order_record_id
"""


def _read_staging(engine: Engine, name: str) -> pd.DataFrame:
    table = f"stg_{name}"
    if not table_exists(engine, table):
        return read_table(engine, table)  # raises the readable "run the stage first" error
    if name == "sales_order_lines":
        return read_query(engine, ORDER_LINE_TOTALS)
    columns = [
        c["name"] for c in sa.inspect(engine).get_columns(table) if c["name"] not in UNUSED_COLUMNS
    ]
    return _as_datetimes(read_table(engine, table, columns))


def load_inputs(engine: Engine) -> MetricInputs:
    """Read the staging tables (the columns used; order lines summed per order) and the
    resolved customers from the warehouse."""
    stg = {name: _read_staging(engine, name) for name in STAGING}
    if table_exists(engine, "core_customer_xref") and table_exists(engine, "core_customers"):
        xref = read_table(
            engine, "core_customer_xref", ["source_system", "source_record_id", "customer_id"]
        )
        core = read_table(engine, "core_customers")
    else:
        log.warning(
            "core_customer_xref/core_customers not found: each source record counts as one customer"
        )
        xref, core = None, None
    return build_inputs(stg, xref, core)


def write_quarter(engine: Engine, quarter: Quarter, frames: dict[str, pd.DataFrame]) -> int:
    """Replace the ``quarter`` partition of every output table; returns rows written."""
    written = 0
    for table in OUTPUT_TABLES:
        frame = frames[table].drop(columns=["quarter"], errors="ignore")
        written += replace_partition(engine, table, frame, quarter=str(quarter))
    return written


def compute_history(
    engine: Engine, settings: Settings, quarter: Quarter, quarters: int, recompute: bool = False
) -> dict[str, int]:
    """Compute and write ``quarter`` and the ``quarters - 1`` before it (those already in
    ``mart_metrics`` are skipped unless ``recompute``); returns rows written per quarter.
    A plain function for a CLI subcommand such as ``crm-pipeline metrics --history 8``."""
    inputs = load_inputs(engine)
    done: set[str] = set()
    if not recompute and table_exists(engine, "mart_metrics"):
        done = set(read_table(engine, "mart_metrics", ["quarter"])["quarter"].astype(str))
    cache = QuarterCache()
    written: dict[str, int] = {}
    for offset in range(quarters - 1, -1, -1):
        q = quarter.shift(-offset)
        if offset and str(q) in done:
            continue
        written[str(q)] = write_quarter(engine, q, compute_quarter(inputs, q, settings, cache))
        log.info("metrics for %s written (%d rows)", q, written[str(q)])
    return written


def run(ctx: StageContext) -> StageResult:
    """The stage: this quarter (always recomputed) plus missing trend quarters."""
    written = compute_history(
        ctx.engine, ctx.settings, ctx.quarter, ctx.settings.metrics.trend_quarters
    )
    current = read_table(ctx.engine, "mart_customer_quarter", quarter=str(ctx.quarter))
    rows_in = len(current)  # customers assessed this quarter
    return StageResult(
        stage="compute_metrics",
        rows_in=rows_in,
        rows_out=sum(written.values()),
        detail={
            "quarters": sorted(written),
            "tiers": current["value_tier"].value_counts().to_dict(),
            "thresholds": {
                "tiers": ctx.settings.tiers.model_dump(mode="json"),
                "metrics": ctx.settings.metrics.model_dump(mode="json"),
            },
        },
    )
