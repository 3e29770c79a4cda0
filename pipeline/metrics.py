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

The stage reads its inputs through :class:`InputWindow`: each input once, in time order,
holding only the quarters the rules look back on, so memory does not grow with the length
of history. :func:`load_inputs` reads all of history at once (for checks and tools).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.quarters import Quarter
from pipeline.readahead import read_ahead
from pipeline.settings import Settings
from pipeline.stages import StageContext, StageResult
from pipeline.transform import satisfaction, tiers
from pipeline.warehouse import (
    one_of,
    read_query,
    read_table,
    replace_partition,
    stream_query,
    table_exists,
)

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
    # customer_id -> first order date, for orders older than those in ``sales`` (a window)
    first_purchases: pd.Series | None = None
    # When set, every customer_id above is a code of these golden ids (compute_quarter's
    # output frames have the ids themselves)
    golden: GoldenIds | None = None
    # customer_id, max_overdue_days of invoices older than the credit window still open
    # (tiers.overdue_before_window), for ``invoices`` that do not reach back that far
    older_overdue: pd.DataFrame | None = None


# The code of a record with no golden customer (GoldenIds)
NO_CUSTOMER = -1


class GoldenIds:
    """core_customer_xref as one lookup per source system, built once: mapping a chunk
    costs only its own lookups (the lookup's hash table is kept with it).

    Records map to integer codes, not to the golden id text: code ``i`` is ``ids[i]``, and
    the ids are sorted, so codes sort as the ids do. Grouping, merging and counting 64-bit
    integers is several times faster than Python strings, and a window of history holds
    8 bytes per row instead of a string (:meth:`decode` turns codes back into ids).
    Unmapped records get :data:`NO_CUSTOMER`."""

    def __init__(self, xref: pd.DataFrame, core: pd.DataFrame | None = None):
        ids = xref["customer_id"].astype(object)
        if core is not None:
            ids = pd.concat([ids, core["customer_id"].astype(object)], ignore_index=True)
        self.ids = np.sort(pd.unique(ids.dropna().to_numpy(dtype=object)))
        self._index = pd.Index(self.ids)
        self.by_system = {
            system: (
                pd.Index(group["source_record_id"].astype(object)),
                self._index.get_indexer(group["customer_id"].astype(object)).astype(np.int64),
            )
            for system, group in xref.groupby("source_system", sort=False)
        }
        for records, _ in self.by_system.values():  # hash tables built here, not in threads
            _ = records.is_unique

    def encode(self, ids: pd.Series) -> pd.Series:
        """Golden ids as codes (:data:`NO_CUSTOMER` for an id not known)."""
        return pd.Series(self._index.get_indexer(ids.astype(object)), index=ids.index)

    def map(self, records: pd.Series, system: str) -> pd.Series:
        lookup = self.by_system.get(system)
        if lookup is None:
            return pd.Series(NO_CUSTOMER, index=records.index, dtype=np.int64)
        index, codes = lookup
        found = index.get_indexer(records.astype(object))
        return pd.Series(
            np.where(found >= 0, np.append(codes, NO_CUSTOMER)[found], NO_CUSTOMER),
            index=records.index,
        )

    def decode(self, codes: pd.Series | np.ndarray) -> np.ndarray:
        return self.ids[np.asarray(codes, dtype=np.int64)]


def _unmapped(customer_ids: pd.Series) -> pd.Series:
    """Rows without a golden customer: no id, or :data:`NO_CUSTOMER` as a code."""
    if customer_ids.dtype.kind in "iu":
        return customer_ids < 0
    return customer_ids.isna()


def _map_ids(records: pd.Series, system: str, xref: pd.DataFrame | GoldenIds | None) -> pd.Series:
    if xref is None:
        return records.astype(object)
    if isinstance(xref, GoldenIds):
        return xref.map(records, system)
    lookup = xref[xref["source_system"] == system].set_index("source_record_id")["customer_id"]
    return records.map(lookup).astype(object)


SEGMENT_TEXT = ("region", "industry", "account_manager")


def _customers(
    stg: dict[str, pd.DataFrame], xref: pd.DataFrame | None, core: pd.DataFrame | None
) -> pd.DataFrame:
    """customer_id, region, industry, account_manager: the golden customers, or without
    ``core`` the customer records of the three sources (``stg``: the three account tables)."""
    if core is not None:
        customers = core.copy()
        if "region" not in customers.columns:
            customers["region"] = customers.get("province")
    else:
        sales_customers = stg["sales_customers"]
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
    for column in SEGMENT_TEXT:
        if column not in customers.columns:
            customers[column] = None
    customers = customers.dropna(subset=["customer_id"]).drop_duplicates("customer_id")
    # Python strings, as in the frames mapped by _map_ids: pandas' Arrow-backed ``str`` is
    # slow to factorize and look up (isin) at 100,000 customers, and mixing the two in one
    # merge converts every time. The segment columns too, made once: each quarter's rows
    # (tiers.customer_quarter) then share these strings instead of making their own.
    return customers.astype(dict.fromkeys(("customer_id", *SEGMENT_TEXT), object))


def build_inputs(
    stg: dict[str, pd.DataFrame], xref: pd.DataFrame | None, core: pd.DataFrame | None
) -> MetricInputs:
    """Map the staging frames onto golden customers (pure). Without ``xref`` every source
    record is its own customer; records missing from ``xref`` are dropped with a warning."""
    customers = _customers(stg, xref, core)
    orders = stg["sales_orders"]
    orders = orders[orders["order_status"].fillna("") != "cancelled"]
    lines = stg["sales_order_lines"].merge(
        orders[["source_record_id", "customer_record_id", "order_date"]],
        left_on="order_record_id",
        right_on="source_record_id",
        suffixes=("_line", ""),
    )
    frames = {
        "sales": _sales(lines, xref),
        "invoices": _invoices(stg["finance_invoices"], xref),
        "tickets": _tickets(stg["service_tickets"], xref),
        "surveys": _surveys(stg["service_surveys"], xref),
        "contacts": _contacts(stg["service_contact_log"], xref),
    }
    for name, frame in frames.items():
        frames[name] = _mapped_only(name, frame)
    invoices, payments = tiers.with_invoice_keys(
        frames.pop("invoices"), _payments(stg["finance_payments"])
    )
    return MetricInputs(customers=customers, invoices=invoices, payments=payments, **frames)


# One builder per input frame, shared by build_inputs (whole tables) and InputWindow
# (chunks of recent history). What is grouped on or counted is an integer: golden
# customers as codes (GoldenIds), orders and invoices as hashes of their ids. Counting
# distinct orders on their text was a third of the computation at 100,000 customers, and
# the ids as Python strings were most of a window's memory; the ids kept stay Arrow text.


def _sales(lines: pd.DataFrame, xref: pd.DataFrame | GoldenIds | None) -> pd.DataFrame:
    """Order lines (or per-order sums) of non-cancelled orders with the order's
    ``customer_record_id`` and ``order_date``."""
    sales = pd.DataFrame(
        {
            "customer_id": _map_ids(lines["customer_record_id"], "sales", xref),
            "order_id": tiers.record_keys(lines["order_record_id"]),  # counted, never shown
            "order_date": lines["order_date"],
            "amount_cny": lines["amount_cny"].astype("float64"),
            "cost_cny": lines["cost_cny"].astype("float64"),
        }
    )
    if "contribution_cny" in lines:  # lines already summed per order (load_inputs)
        sales["contribution_cny"] = lines["contribution_cny"].astype("float64")
    return sales


def _invoices(inv: pd.DataFrame, xref: pd.DataFrame | GoldenIds | None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "invoice_id": inv["source_record_id"],
            "customer_id": _map_ids(inv["customer_record_id"], "finance", xref),
            "invoice_date": inv["invoice_date"],
            "due_date": inv["due_date"],
            "amount_cny": inv["amount_cny"].astype("float64"),
        }
    )


def _payments(pay: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "invoice_id": pay["invoice_record_id"],
            "paid_date": pay["paid_date"],
            "amount_cny": pay["amount_cny"].astype("float64"),
        }
    )


def _tickets(tk: pd.DataFrame, xref: pd.DataFrame | GoldenIds | None) -> pd.DataFrame:
    tickets = tk.rename(columns={"source_record_id": "ticket_id"})
    return tickets.assign(customer_id=_map_ids(tk["customer_record_id"], "service", xref))


def _surveys(sv: pd.DataFrame, xref: pd.DataFrame | GoldenIds | None) -> pd.DataFrame:
    return sv.assign(customer_id=_map_ids(sv["customer_record_id"], "service", xref))


def _contacts(cl: pd.DataFrame, xref: pd.DataFrame | GoldenIds | None) -> pd.DataFrame:
    return cl.assign(customer_id=_map_ids(cl["customer_record_id"], "service", xref))


def _mapped_only(name: str, frame: pd.DataFrame, unmapped: Counter | None = None) -> pd.DataFrame:
    """The rows mapped to a golden customer; the others are counted in ``unmapped`` when
    given (a stream's chunks, logged once), else logged."""
    missing = _unmapped(frame["customer_id"])
    count = int(missing.sum())
    if not count:
        return frame
    if unmapped is not None:
        unmapped[name] += count
    else:
        _warn_unmapped(name, count)
    return frame[~missing.to_numpy()]


def _warn_unmapped(name: str, count: int) -> None:
    log.warning("%s: %d rows have no golden customer in core_customer_xref; left out", name, count)


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
        inputs.first_purchases,
        inputs.older_overdue,
    )


@dataclass
class QuarterCache:
    """Frames of quarters already computed, shared by consecutive quarters of one run: each
    quarter needs the two before it (customer rows) and the one before (its metrics)."""

    customers: dict[Quarter, pd.DataFrame] = field(default_factory=dict)
    metrics: dict[Quarter, pd.DataFrame] = field(default_factory=dict)

    def keep_from(self, quarter: Quarter) -> None:
        """Forget the quarters before ``quarter``: memory holds a few quarters, not all."""
        for cached in (self.customers, self.metrics):
            for old in [q for q in cached if q < quarter]:
                del cached[old]

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
    frames = {
        "mart_customer_quarter": current,
        "mart_metrics": metrics,
        "mart_sla_offenders": offenders,
        "mart_tier_migration": migration,
        "mart_both_ends": tiers.both_ends(current),
    }
    if inputs.golden is not None:  # codes back to golden ids
        for name, frame in frames.items():
            if "customer_id" in frame.columns:
                ids = inputs.golden.decode(frame["customer_id"])
                frames[name] = frame.assign(customer_id=ids)
    return frames


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


def _read_core(engine: Engine) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(core_customer_xref, core_customers), or (None, None) before resolution has run."""
    if table_exists(engine, "core_customer_xref") and table_exists(engine, "core_customers"):
        xref = read_table(
            engine, "core_customer_xref", ["source_system", "source_record_id", "customer_id"]
        )
        return xref, read_table(engine, "core_customers")
    log.warning(
        "core_customer_xref/core_customers not found: each source record counts as one customer"
    )
    return None, None


def load_inputs(engine: Engine) -> MetricInputs:
    """Read the staging tables (the columns used; order lines summed per order) and the
    resolved customers from the warehouse: all of history (see :class:`InputWindow`)."""
    stg = {name: _read_staging(engine, name) for name in STAGING}
    xref, core = _read_core(engine)
    return build_inputs(stg, xref, core)


ACCOUNTS = ("sales_customers", "service_accounts", "finance_accounts")
FEED_TABLES = (
    "sales_orders",
    "sales_order_lines",
    "finance_invoices",
    "finance_payments",
    "service_tickets",
    "service_surveys",
    "service_contact_log",
)

# The frames read in time order: staging table, the column the window slides on (in the
# table and the frame). Rows without a time are never in a quarter.
FEEDS = {
    "sales": ("sales_orders", "order_date"),
    "invoices": ("finance_invoices", "invoice_date"),
    "payments": ("finance_payments", "window_date"),
    "tickets": ("service_tickets", "opened_at"),
    "surveys": ("service_surveys", "answered_at"),
    "contacts": ("service_contact_log", "contacted_at"),
}

# In the feeds, CROSS JOIN ... WHERE is an inner join that SQLite runs in the order written:
# the table outside, the subquery searched through an index SQLite builds for it. In the
# order it picked itself, it scanned the payments once per invoice (a minute instead of
# 0.05 s on the demo), or the orders once per order total where the staging table has no
# index. PostgreSQL plans it as the same hash join either way.

# Orders of non-cancelled orders with their lines summed, by order date.
SALES_FEED = f"""
SELECT o.customer_record_id, o.source_record_id AS order_record_id, o.order_date,
       l.amount_cny, l.cost_cny, l.contribution_cny
FROM stg_sales_orders o
CROSS JOIN ({ORDER_LINE_TOTALS}) l
WHERE l.order_record_id = o.source_record_id
  AND (o.order_status IS NULL OR o.order_status <> 'cancelled') AND o.order_date IS NOT NULL
  {{floor}}
ORDER BY o.order_date
"""

# Each customer record's first order (with lines, not cancelled) before the window's floor.
FIRST_ORDERS = """
SELECT o.customer_record_id, MIN(o.order_date) AS order_date
FROM stg_sales_orders o
WHERE (o.order_status IS NULL OR o.order_status <> 'cancelled') AND o.order_date IS NOT NULL
  AND o.order_date < %(floor)s
  AND o.source_record_id IN (SELECT order_record_id FROM stg_sales_order_lines)
GROUP BY o.customer_record_id
"""


# Payments by the date of their invoice: they enter and leave the window with it.
# Payments of invoices not staged can match nothing and are left out.
PAYMENTS_FEED = """
SELECT p.invoice_record_id, p.paid_date, p.amount_cny, i.invoice_date AS window_date
FROM stg_finance_payments p
CROSS JOIN (SELECT source_record_id, MIN(invoice_date) AS invoice_date
            FROM stg_finance_invoices WHERE invoice_date IS NOT NULL
            GROUP BY source_record_id) i
WHERE i.source_record_id = p.invoice_record_id {floor}
ORDER BY i.invoice_date
"""


# The builder of each feed's frame (payments have no customer of their own)
BUILDERS = {
    "sales": _sales,
    "invoices": _invoices,
    "tickets": _tickets,
    "surveys": _surveys,
    "contacts": _contacts,
}

# Windows reach two days further either side: *_at columns are UTC, quarters local.
MARGIN = pd.Timedelta(days=2)

# The feeds sort whole tables: PostgreSQL's default work_mem (4 MB) sorts the orders on
# disk, twice as slow at 100,000 customers. Six sessions at most use this much each.
SORT_SETTINGS = {"work_mem": "64MB"}


def lookback_quarters(settings: Settings, warm: bool = False) -> dict[str, int]:
    """Per input frame: how many quarters before a quarter ``q`` compute_quarter(q) reads.

    With an empty cache it computes q-2 and q-1 too, and the credit grades of q-3. ``warm``:
    with the cache holding q-2 and q-1 (the run computed them just before), it reads only
    q's own windows."""
    t = settings.tiers
    value = -(-t.value_window_months // 3)
    credit = -(-t.credit_window_months // 3)
    sales = max(value, t.churn_quiet_quarters, t.loyal_window_quarters, 2)
    if warm:
        return {
            "sales": sales - 1,
            "invoices": credit - 1,
            "payments": credit - 1,
            "tickets": 1,  # complaints of q-1 (rising or not); open ones are kept
            "surveys": 0,
            "contacts": 0,
        }
    return {
        "sales": 2 + sales - 1,
        "invoices": 3 + credit - 1,
        "payments": 3 + credit - 1,
        "tickets": 3,  # complaints of q-3 (rising or not at q-2); open ones are kept
        "surveys": 3,
        "contacts": 3,
    }


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Chunks of one stream as one frame. A chunk whose column held only NULLs has it as
    objects; it takes the type the other chunks give the column."""
    parts = [p for p in parts if len(p)] or parts[:1]
    if len(parts) == 1:
        return parts[0]
    for column in parts[0].columns:
        typed = [p[column].dtype for p in parts if p[column].dtype != object]
        if not typed or len(typed) == len(parts):
            continue
        for i, part in enumerate(parts):
            if part[column].dtype == object and part[column].isna().all():
                parts[i] = part.assign(**{column: part[column].astype(typed[0])})
    return pd.concat(parts, ignore_index=True)


# Invoices issued before a credit window (``start``) and not paid in full by a quarter's
# end, with what was paid by then (``after``: the day after that end; dates compare as
# text on SQLite).
OPEN_BEFORE_WINDOW = """
SELECT i.source_record_id, i.customer_record_id, i.invoice_date, i.due_date, i.amount_cny,
       SUM(CASE WHEN p.paid_date < %(after)s THEN p.amount_cny ELSE 0 END) AS paid_cny
FROM stg_finance_invoices i
LEFT JOIN stg_finance_payments p ON p.invoice_record_id = i.source_record_id
WHERE i.invoice_date < %(start)s
GROUP BY i.source_record_id, i.customer_record_id, i.invoice_date, i.due_date, i.amount_cny
HAVING COALESCE(SUM(CASE WHEN p.paid_date < %(after)s THEN p.amount_cny ELSE 0 END), 0)
       < i.amount_cny - 0.005
"""


class InputWindow:
    """The metric inputs of the quarters a run computes, oldest quarter first, holding only
    the history those quarters read: memory follows the windows (with the default
    settings 8 quarters of invoices, 4 of orders, 2 of tickets and 1 of surveys and
    contacts; the first quarter reads 3 more of each, as its cache is empty), not the
    length of history.

    Each input is one query in time order from the first quarter's window on, read
    ``chunk_rows`` rows at a time (``sources.chunk_rows``). What the quarters need of
    older history comes as aggregates: each customer's first purchase (lifecycle) and the
    complaints still open. Rows leaving the window later are folded in the same way. The
    invoices older than a quarter's credit window that are still unpaid (overdue) are read
    apart, once for the quarters up to ``last`` when it is given. Every computation
    filters its own window, so the results equal those over all of history
    (:func:`load_inputs`); memory is the windows plus up to three chunks per input.
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        first: Quarter | None = None,
        chunk_rows: int | None = None,
        last: Quarter | None = None,
    ):
        self.engine = engine
        self.settings = settings
        self.last = last
        # (last quarter covered, open invoices, their payments): see _older_overdue
        self.older: tuple[Quarter, pd.DataFrame, pd.DataFrame] | None = None
        self.chunk_rows = chunk_rows or settings.sources.chunk_rows
        self.first = first
        self.back = lookback_quarters(settings)
        self.warm_back = lookback_quarters(settings, warm=True)
        # Rows older than the first quarter's windows are never read row by row (``first``:
        # the oldest quarter asked for; without it, all history streams through).
        self.floors = (
            {}
            if first is None
            else {name: self._start(first, name).strftime("%Y-%m-%d") for name in FEEDS}
        )
        xref, core = _read_core(engine)
        accounts = {} if core is not None else {n: _read_staging(engine, n) for n in ACCOUNTS}
        self.customers = _customers(accounts, xref, core)
        self.golden = None if xref is None else GoldenIds(xref, core)
        if self.golden is not None:  # every input keyed on codes (see GoldenIds)
            codes = self.golden.encode(self.customers["customer_id"])
            self.customers = self.customers.assign(customer_id=codes)[codes >= 0]
        self.frames: dict[str, pd.DataFrame] = {}
        self.ahead: dict[str, pd.DataFrame] = {}
        self.first_purchases = pd.Series(dtype="datetime64[ns]")
        self.unmapped: Counter = Counter()
        self.quarter: Quarter | None = None
        for table in FEED_TABLES:
            if not table_exists(engine, f"stg_{table}"):
                read_table(engine, f"stg_{table}")  # raises "run the stage first"
        self._before_floors()
        # Last, as the threads use all of the above. The six queries start now, each in a
        # thread of its own: the database sorts them side by side, and each stream is read
        # one chunk ahead of the computation.
        self.streams = {
            name: read_ahead(self._stream(name), depth=1, name=f"metrics-{name}") for name in FEEDS
        }

    def _start(self, quarter: Quarter, name: str, warm: bool = False) -> pd.Timestamp:
        """The oldest time of feed ``name`` that compute_quarter(quarter) can use (``warm``:
        with the two quarters before it cached)."""
        back = (self.warm_back if warm else self.back)[name]
        return pd.Timestamp(quarter.shift(-back).start_date) - MARGIN

    def _columns(self, table: str) -> str:
        return ", ".join(
            f'"{c["name"]}"'
            for c in sa.inspect(self.engine).get_columns(table)
            if c["name"] not in UNUSED_COLUMNS
        )

    def _sql(self, name: str) -> tuple[str, dict[str, str]]:
        """The feed's query and its parameters: rows from the floor on, in time order."""
        floor = self.floors.get(name)
        params = {} if floor is None else {"floor": floor}
        if name == "sales":
            return SALES_FEED.format(
                floor="AND o.order_date >= %(floor)s" if params else ""
            ), params
        if name == "payments":
            return PAYMENTS_FEED.format(
                floor="AND i.invoice_date >= %(floor)s" if params else ""
            ), params
        table, time = f"stg_{FEEDS[name][0]}", FEEDS[name][1]
        since = f' AND "{time}" >= %(floor)s' if params else ""
        sql = (
            f'SELECT {self._columns(table)} FROM "{table}" WHERE "{time}" IS NOT NULL{since} '
            f'ORDER BY "{time}"'
        )
        return sql, params

    def _before_floors(self) -> None:
        """What the quarters need of the history before the floors, as aggregates: each
        customer's first purchase, and the complaints still open at the floor."""
        if not self.floors:
            return
        first = _as_datetimes(
            read_query(self.engine, FIRST_ORDERS, {"floor": self.floors["sales"]})
        )
        first = first.assign(
            customer_id=_map_ids(first["customer_record_id"], "sales", self.golden)
        )
        self.first_purchases = (
            first[~_unmapped(first["customer_id"])].groupby("customer_id")["order_date"].min()
        )
        table = "stg_service_tickets"
        open_complaints = (
            f'SELECT {self._columns(table)} FROM "{table}" '
            "WHERE opened_at IS NOT NULL AND opened_at < %(floor)s AND category = %(category)s "
            "AND (resolved_at IS NULL OR resolved_at >= %(floor)s)"
        )
        found = read_query(
            self.engine,
            open_complaints,
            {"floor": self.floors["tickets"], "category": tiers.COMPLAINT_CATEGORY},
        )
        self.frames["tickets"] = _mapped_only(
            "tickets", _tickets(_as_datetimes(found), self.golden), self.unmapped
        )

    def _stream(self, name: str) -> Iterator[pd.DataFrame]:
        """The feed's chunks built as the input frames (run in the feed's thread)."""
        sql, params = self._sql(name)
        for chunk in stream_query(
            self.engine, sql, self.chunk_rows, params=params, pg_settings=SORT_SETTINGS
        ):
            chunk = _as_datetimes(chunk)
            if name == "payments":
                frame = _payments(chunk).assign(window_date=chunk["window_date"])
            else:
                frame = _mapped_only(name, BUILDERS[name](chunk, self.golden), self.unmapped)
            if name in ("invoices", "payments"):  # keyed once per row, here
                frame["invoice_key"] = tiers.record_keys(frame["invoice_id"])
            yield frame

    def _advance(self, name: str, horizon: pd.Timestamp, start: pd.Timestamp) -> None:
        """Read rows up to ``horizon`` (exclusive); drop those before ``start``, chunk by
        chunk (the first quarter's read passes over all older history)."""
        time = FEEDS[name][1]
        parts = [self._retire(name, self.frames[name], start)] if name in self.frames else []
        while True:
            chunk = self.ahead.pop(name, None)
            if chunk is None:
                chunk = next(self.streams[name], None)
                if chunk is None:
                    break
            inside = (chunk[time] < horizon).to_numpy()
            if not inside.all():
                self.ahead[name] = chunk[~inside]
                parts.append(self._retire(name, chunk[inside], start))
                break
            parts.append(self._retire(name, chunk, start))
        self.frames[name] = _concat(parts)

    def _retire(self, name: str, frame: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
        """``frame`` without its rows before ``start``, folded into what later quarters
        still need of them: first purchases, and complaints that may still be open."""
        old = (frame[FEEDS[name][1]] < start).to_numpy()
        if not old.any():
            return frame
        keep = ~old
        if name == "sales":
            first = frame[old].groupby("customer_id")["order_date"].min()
            self.first_purchases = pd.concat([self.first_purchases, first]).groupby(level=0).min()
        elif name == "tickets":  # a complaint open at ``start`` may be open at a later end
            complaint = (frame["category"] == tiers.COMPLAINT_CATEGORY).to_numpy()
            open_ = (frame["resolved_at"].isna() | (frame["resolved_at"] >= start)).to_numpy()
            keep |= complaint & open_
        return frame[keep].reset_index(drop=True)

    def inputs_for(self, quarter: Quarter) -> MetricInputs:
        """The inputs compute_quarter(quarter) needs. Quarters come oldest first, one after
        another: the first with an empty cache, each later one with the cache holding
        what the run computed for the quarters before it (:class:`QuarterCache`), so the
        window keeps only the quarter's own windows from then on."""
        earliest = self.quarter or self.first
        if earliest is not None and quarter < earliest:
            raise ValueError(f"{quarter} comes before {earliest}: quarters go oldest first")
        if self.quarter is not None and quarter > self.quarter.shift(1):
            raise ValueError(
                f"{quarter} does not follow {self.quarter}: quarters go oldest first, "
                "one after another"
            )
        warm = self.quarter is not None
        self.quarter = quarter
        horizon = pd.Timestamp(quarter.shift(1).start_date) + MARGIN
        for name in FEEDS:
            self._advance(name, horizon, self._start(quarter, name, warm))
        return MetricInputs(
            customers=self.customers,
            sales=self.frames["sales"],
            invoices=self.frames["invoices"],
            payments=self.frames["payments"],
            tickets=self.frames["tickets"],
            surveys=self.frames["surveys"],
            contacts=self.frames["contacts"],
            first_purchases=self.first_purchases,
            golden=self.golden,
            older_overdue=self._older_overdue(quarter),
        )

    def _older_overdue(self, quarter: Quarter) -> pd.DataFrame:
        """:func:`tiers.overdue_before_window` of ``quarter``, from the warehouse: the
        window holds none of those invoices. Read once for the run's quarters up to
        ``last``: the invoices older than the last quarter's credit window that are open
        at this quarter's end (an invoice paid by then is paid at every later end too),
        and their payments after it."""
        if self.older is None or quarter > self.older[0]:
            self.older = (max(self.last or quarter, quarter), *self._open_invoices(quarter))
        _, invoices, payments = self.older
        return tiers.overdue_before_window(invoices, payments, quarter, self.settings.tiers)

    def _open_invoices(self, quarter: Quarter) -> tuple[pd.DataFrame, pd.DataFrame]:
        last = max(self.last or quarter, quarter)
        start = tiers.window_start(last, self.settings.tiers.credit_window_months)
        after = quarter.end_date + timedelta(days=1)
        found = _as_datetimes(
            read_query(
                self.engine,
                OPEN_BEFORE_WINDOW,
                {"start": start.isoformat(), "after": after.isoformat()},
            )
        )
        invoices = pd.DataFrame(
            {
                "invoice_id": found["source_record_id"].astype(object),
                "customer_id": _map_ids(found["customer_record_id"], "finance", self.golden),
                "invoice_date": found["invoice_date"],
                "due_date": found["due_date"],
                "amount_cny": found["amount_cny"].astype("float64"),
            }
        )
        keep = ~_unmapped(invoices["customer_id"])
        invoices, found = invoices[keep], found[keep]
        # What each had been paid by this quarter's end, as one payment on that day...
        paid = pd.DataFrame(
            {
                "invoice_id": invoices["invoice_id"],
                "paid_date": pd.Timestamp(quarter.end_date),
                "amount_cny": found["paid_cny"].fillna(0).astype("float64"),
            }
        )
        # ... and what was paid later, for the later quarters.
        ids = [str(i) for i in invoices["invoice_id"]]
        later = pd.DataFrame(columns=["invoice_id", "paid_date", "amount_cny"])
        if ids:
            among, listed = one_of(self.engine.dialect.name, "%(ids)s", ids)
            later = _as_datetimes(
                read_query(
                    self.engine,
                    "SELECT invoice_record_id AS invoice_id, paid_date, amount_cny "
                    f"FROM stg_finance_payments WHERE paid_date >= %(after)s "
                    f"AND invoice_record_id {among}",
                    {"after": after.isoformat(), "ids": listed},
                )
            )
        payments = pd.concat([paid, later], ignore_index=True)
        payments["amount_cny"] = payments["amount_cny"].astype("float64")
        payments["paid_date"] = pd.to_datetime(payments["paid_date"])
        return tiers.with_invoice_keys(invoices, payments)

    def close(self) -> None:
        """Stop the streams (their connections close) and log the rows left out."""
        for stream in self.streams.values():
            stream.close()
        for name, count in sorted(self.unmapped.items()):
            _warn_unmapped(name, count)


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
    done: set[str] = set()
    if not recompute and table_exists(engine, "mart_metrics"):
        done = set(read_table(engine, "mart_metrics", ["quarter"])["quarter"].astype(str))
    todo = [
        quarter.shift(-offset)
        for offset in range(quarters - 1, -1, -1)
        if not offset or str(quarter.shift(-offset)) not in done
    ]
    window = InputWindow(engine, settings, first=todo[0], last=todo[-1])
    cache = QuarterCache()
    written: dict[str, int] = {}
    try:
        # The window takes quarters one after another: those between that are already
        # written are computed again (for the cache) but not written.
        q = todo[0]
        while q <= quarter:
            frames = compute_quarter(window.inputs_for(q), q, settings, cache)
            if q in todo:
                written[str(q)] = write_quarter(engine, q, frames)
                log.info("metrics for %s written (%d rows)", q, written[str(q)])
            cache.keep_from(q.shift(-1))  # the next quarter reads back to this one's previous
            q = q.shift(1)
    finally:
        window.close()
    return written


# Dated activity (staging table, date column): a quarter that ends before all of it has
# nothing to report.
ACTIVITY_DATES = (
    ("stg_sales_orders", "order_date"),
    ("stg_service_tickets", "opened_at"),
    ("stg_finance_invoices", "invoice_date"),
)


class NothingToReport(ValueError):
    """The quarter ends before the warehouse's first order, ticket or invoice."""


def first_activity(engine: Engine) -> pd.Timestamp | None:
    """The earliest order, ticket or invoice date in the warehouse (None: none staged)."""
    firsts = []
    for table, column in ACTIVITY_DATES:
        if table_exists(engine, table):
            with engine.connect() as conn:
                value = conn.execute(sa.text(f'SELECT MIN("{column}") FROM "{table}"')).scalar()
            if value is not None:
                firsts.append(pd.Timestamp(value))
    return min(firsts) if firsts else None


def check_activity(engine: Engine, quarter: Quarter) -> None:
    """:class:`NothingToReport` when ``quarter`` ends before the first dated activity (every
    customer would be unclassified and every rate empty). A warehouse with customers but no
    activity yet still reports them."""
    first = first_activity(engine)
    if first is not None and first.date() > quarter.end_date:
        raise NothingToReport(
            f"{quarter} ends {quarter.end_date}, before the first order, ticket or invoice in "
            f"the warehouse ({first.date()}): there is nothing to report for it; the first "
            f"quarter with activity is {Quarter.of(first.date())}"
        )


def run(ctx: StageContext) -> StageResult:
    """The stage: this quarter (always recomputed) plus missing trend quarters."""
    check_activity(ctx.engine, ctx.quarter)
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
