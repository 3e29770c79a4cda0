"""Customer tiers as of a quarter's end: value tier, credit grade, lifecycle stage, risk flags.

Pure functions: they take frames already keyed on the golden ``customer_id`` plus the
quarter and the thresholds, and return new frames. No clock reads, so any past quarter
can be recomputed exactly. Windows are whole calendar quarters (12 months = 4 quarters,
24 months = 8 quarters) ending with the quarter being computed; ``*_date`` columns are
calendar dates compared with the quarter's local dates, ``*_at`` columns are naive UTC
compared with :meth:`Quarter.start_utc` / :meth:`Quarter.end_utc`.

Input frames (extra columns are ignored):

- ``sales``: one row per order line of a non-cancelled order — ``customer_id``,
  ``order_id``, ``order_date``, ``amount_cny``, ``cost_cny`` (NaN when unknown).
- ``invoices``: one row per invoice — ``invoice_id``, ``customer_id``, ``invoice_date``,
  ``due_date``, ``amount_cny``.
- ``payments``: one row per payment — ``invoice_id``, ``paid_date``, ``amount_cny``.
- ``tickets``: one row per service ticket — ``customer_id``, ``opened_at``, ``category``,
  ``resolved_at``.
- ``contacts``: one row per logged contact — ``customer_id``, ``contacted_at``.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from pipeline.quarters import Quarter
from pipeline.settings import TierSettings

COMPLAINT_CATEGORY = "service_quality_complaint"
NO_STANDING = "none"
GRADE_ORDER = ("A", "B", "C", "D", NO_STANDING)
LIFECYCLE_STAGES = ("potential", "new", "loyal", "at_risk", "churned", "active")


def _ts(day: date) -> pd.Timestamp:
    return pd.Timestamp(day)


def window_start(quarter: Quarter, months: int) -> date:
    """First calendar day of a trailing window of ``months`` (a multiple of 3) ending with ``quarter``."""
    if months % 3:
        raise ValueError(f"window of {months} months is not a whole number of quarters")
    return quarter.shift(-(months // 3) + 1).start_date


def line_contribution(sales: pd.DataFrame) -> pd.Series:
    """Per order line: gross margin where cost is known, else revenue (CNY). Rows that are
    already sums of lines (one per order) carry that sum in ``contribution_cny``."""
    if "contribution_cny" in sales:
        return sales["contribution_cny"].astype("float64")
    amount = sales["amount_cny"].astype("float64")
    cost = sales["cost_cny"].astype("float64")
    return (amount - cost).where(cost.notna(), amount)


def value_tiers(sales: pd.DataFrame, quarter: Quarter, settings: TierSettings) -> pd.DataFrame:
    """One row per customer with a purchase in the trailing window: ``customer_id``,
    ``contribution_cny``, ``contribution_share``, ``value_tier``.

    Customers are ranked by contribution (ties broken by ``customer_id``). A customer is
    tier A when the customers ranked above it make less than ``value_a_share`` of the total
    positive contribution (so the top customer is always A), B while that share is below
    ``value_a_share + value_b_share``, otherwise C. Customers with zero or negative
    contribution are C.
    """
    start = _ts(window_start(quarter, settings.value_window_months))
    end = _ts(quarter.end_date)
    in_window = sales[(sales["order_date"] >= start) & (sales["order_date"] <= end)]
    per_customer = (
        pd.DataFrame(
            {"customer_id": in_window["customer_id"], "c": line_contribution(in_window)},
        )
        .groupby("customer_id", sort=True)["c"]
        .sum()
        .rename("contribution_cny")
        .reset_index()
    )
    per_customer = per_customer.sort_values(
        ["contribution_cny", "customer_id"], ascending=[False, True], kind="mergesort"
    ).reset_index(drop=True)
    positive = per_customer["contribution_cny"].clip(lower=0)
    total = positive.sum()
    share = positive / total if total > 0 else pd.Series(0.0, index=per_customer.index)
    before = share.cumsum() - share
    a_cut = settings.value_a_share
    b_cut = settings.value_a_share + settings.value_b_share
    tier = np.where(before < a_cut - 1e-12, "A", np.where(before < b_cut - 1e-12, "B", "C"))
    tier = np.where(per_customer["contribution_cny"] > 0, tier, "C")
    per_customer["contribution_share"] = share
    per_customer["value_tier"] = tier
    return per_customer


NO_KEY = np.iinfo(np.int64).min


def record_keys(ids: pd.Series) -> np.ndarray:
    """One 64-bit integer per record id (its hash; ``NO_KEY`` for no id): the same for
    the same id in any frame or chunk, so invoices and payments read apart match without
    a shared table of ids, and distinct orders are counted without Python strings.
    Distinct ids colliding is a 1 in 10**7 chance among two million ids."""
    values = ids.to_numpy(dtype=object)
    missing = pd.isna(values)
    keys = pd.util.hash_array(np.where(missing, "", values).astype(object), categorize=False)
    keys = keys.view(np.int64)
    keys[keys == NO_KEY] += 1  # the sentinel is never a real id's key
    keys[missing] = NO_KEY
    return keys


def with_invoice_keys(
    invoices: pd.DataFrame, payments: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Copies with ``invoice_key`` (:func:`record_keys`). Made once per run
    (pipeline.metrics), every quarter's credit grades match payments to invoices by it
    instead of hashing text."""
    return (
        invoices.assign(invoice_key=record_keys(invoices["invoice_id"])),
        payments.assign(invoice_key=record_keys(payments["invoice_id"])),
    )


def invoice_status(
    invoices: pd.DataFrame,
    payments: pd.DataFrame,
    quarter: Quarter,
    settings: TierSettings,
    before_window: bool = False,
) -> pd.DataFrame:
    """One row per invoice issued in the credit window (``before_window``: issued before
    it), as of the quarter's end.

    Columns: ``invoice_id``, ``customer_id``, ``billed_cny``, ``collected_cny`` (payments
    up to the quarter's end, capped at the invoice amount), ``is_paid``, ``cycle_days``
    (days from the invoice date to the payment that settled it or, open, to the quarter's
    end: an open invoice's cycle is as long as paying it that day would make it) and
    ``overdue_days`` (open invoices only: days from the due date — or invoice date when
    blank — to the quarter's end, 0 when not yet due).
    """
    start = _ts(window_start(quarter, settings.credit_window_months))
    end = _ts(quarter.end_date)
    if "invoice_key" not in invoices.columns or "invoice_key" not in payments.columns:
        invoices, payments = with_invoice_keys(invoices, payments)
    if before_window:
        inv = invoices[invoices["invoice_date"] < start]
    else:
        inv = invoices[(invoices["invoice_date"] >= start) & (invoices["invoice_date"] <= end)]
    inv = inv[
        ["invoice_id", "customer_id", "invoice_date", "due_date", "amount_cny", "invoice_key"]
    ]
    inv = inv.reset_index(drop=True)
    # Equal ids have equal keys: the ids are compared only when two keys are equal.
    duplicated = inv["invoice_key"].duplicated(keep=False)
    if duplicated.any():
        duplicated = inv["invoice_id"].duplicated() & duplicated
    if duplicated.any():
        sample = ", ".join(map(str, inv.loc[duplicated, "invoice_id"].head(5)))
        raise ValueError(f"invoice ids must be unique; duplicated: {sample}")
    pay = payments[payments["paid_date"] <= end]
    # Integer keys instead of text ids: sorting and grouping stay fast at millions of rows.
    # Each payment finds its invoice's position in a hash table of the invoices' keys.
    keys = inv["invoice_key"].to_numpy(dtype="int64")
    pay_keys = pay["invoice_key"].to_numpy(dtype="int64")
    with_id = np.flatnonzero(keys != NO_KEY)
    index = pd.Index(keys[with_id])
    if not index.is_unique:  # ids are unique (checked above): two ids share a hash
        raise ValueError("two invoice ids have the same invoice_key; rename one")
    found = index.get_indexer(pay_keys)  # -1: no invoice; it picks the -1 appended
    code = np.where(pay_keys != NO_KEY, np.append(with_id, -1)[found], -1)
    keep = code >= 0
    code = code[keep]
    paid_on = pay["paid_date"].to_numpy()[keep]
    paid_amount = pay["amount_cny"].to_numpy(dtype="float64")[keep]
    order = np.lexsort((paid_on, code))
    code, paid_on, paid_amount = code[order], paid_on[order], paid_amount[order]
    running = pd.Series(paid_amount).groupby(code).cumsum().to_numpy()
    billed = inv["amount_cny"].astype("float64")
    totals = np.bincount(code, weights=paid_amount, minlength=len(inv))
    collected = pd.Series(np.minimum(totals, billed.to_numpy()), index=inv.index)
    is_paid = collected >= billed - 0.005
    # The payment that settled the invoice: the first (by date) whose running total reaches it.
    reached = running >= billed.to_numpy()[code] - 0.005
    first = pd.DataFrame({"code": code[reached], "paid_on": paid_on[reached]}).drop_duplicates(
        "code"
    )
    settled_values = np.full(len(inv), np.datetime64("NaT"), dtype="datetime64[ns]")
    settled_values[first["code"].to_numpy()] = first["paid_on"].to_numpy(dtype="datetime64[ns]")
    settled = pd.Series(settled_values, index=inv.index)
    merged = inv
    paid_cycle = (settled - merged["invoice_date"]).dt.days
    open_cycle = (end - merged["invoice_date"]).dt.days
    open_from = merged["due_date"].fillna(merged["invoice_date"])
    overdue = (end - open_from).dt.days.clip(lower=0)
    return pd.DataFrame(
        {
            "invoice_id": merged["invoice_id"].array,
            "customer_id": merged["customer_id"].to_numpy(),
            "billed_cny": billed.to_numpy(),
            "collected_cny": collected.to_numpy(),
            "is_paid": is_paid.to_numpy(),
            "cycle_days": np.where(is_paid, paid_cycle, open_cycle).astype("float64"),
            "overdue_days": np.where(is_paid, 0, overdue).astype("float64"),
        }
    )


def overdue_before_window(
    invoices: pd.DataFrame, payments: pd.DataFrame, quarter: Quarter, settings: TierSettings
) -> pd.DataFrame:
    """Per customer, the longest overdue of its invoices issued *before* the credit window
    and still open at the quarter's end (``customer_id``, ``max_overdue_days``): an
    invoice unpaid for years is no less overdue for being older than the window the
    grade looks at. Customers without one get no row."""
    status = invoice_status(invoices, payments, quarter, settings, before_window=True)
    still_open = status[~status["is_paid"]]
    per = still_open.groupby("customer_id", sort=True)["overdue_days"].max()
    return per.rename("max_overdue_days").reset_index()


def grade_for(collected_share: float, longest_cycle_days: float, settings: TierSettings) -> str:
    """The best grade whose minimum share and longest cycle both hold, else ``"none"``."""
    for grade, (min_share, max_cycle) in sorted(settings.credit_grades.items()):
        if collected_share >= min_share - 1e-12 and longest_cycle_days <= max_cycle:
            return grade
    return NO_STANDING


def grades_for(
    collected_share: pd.Series, longest_cycle_days: pd.Series, settings: TierSettings
) -> np.ndarray:
    """:func:`grade_for` of every pair, at once."""
    share = collected_share.to_numpy(dtype="float64")
    cycle = longest_cycle_days.to_numpy(dtype="float64")
    ranked = sorted(settings.credit_grades.items())
    holds = [
        (share >= min_share - 1e-12) & (cycle <= max_cycle) for _, (min_share, max_cycle) in ranked
    ]
    return np.select(holds, [grade for grade, _ in ranked], default=NO_STANDING).astype(object)


def credit_grades(
    invoices: pd.DataFrame, payments: pd.DataFrame, quarter: Quarter, settings: TierSettings
) -> pd.DataFrame:
    """One row per customer invoiced in the trailing credit window: ``customer_id``,
    ``billed_cny``, ``collected_share``, ``longest_cycle_days``, ``max_overdue_days``,
    ``credit_grade`` (A-D or ``"none"``). Customers never invoiced in the window get no row.
    """
    status = invoice_status(invoices, payments, quarter, settings)
    per = status.groupby("customer_id", sort=True).agg(
        billed_cny=("billed_cny", "sum"),
        collected_cny=("collected_cny", "sum"),
        longest_cycle_days=("cycle_days", "max"),
        max_overdue_days=("overdue_days", "max"),
    )
    per["collected_share"] = np.where(
        per["billed_cny"] > 0,
        per["collected_cny"] / per["billed_cny"].where(per["billed_cny"] > 0),
        1.0,
    )
    per["credit_grade"] = grades_for(per["collected_share"], per["longest_cycle_days"], settings)
    return per.reset_index()[
        [
            "customer_id",
            "billed_cny",
            "collected_share",
            "longest_cycle_days",
            "max_overdue_days",
            "credit_grade",
        ]
    ]


def quarterly_purchases(sales: pd.DataFrame, quarter: Quarter, quarters: int) -> pd.DataFrame:
    """Orders and amount per customer for each of the ``quarters`` quarters ending with ``quarter``.

    One row per customer x offset (0 = this quarter, 1 = previous, ...), customers with any
    purchase in the span only: ``customer_id``, ``offset``, ``orders``, ``amount_cny``.
    """
    first = quarter.shift(-(quarters - 1))
    start, end = _ts(first.start_date), _ts(quarter.end_date)
    span = sales[(sales["order_date"] >= start) & (sales["order_date"] <= end)]
    day = span["order_date"]
    index = day.dt.year * 4 + (day.dt.month - 1) // 3
    offset = (quarter.year * 4 + quarter.number - 1) - index
    frame = pd.DataFrame(
        {
            "customer_id": span["customer_id"],
            "offset": offset,
            "order_id": span["order_id"],
            "amount_cny": span["amount_cny"].astype("float64"),
        }
    )
    return (
        frame.groupby(["customer_id", "offset"])
        .agg(orders=("order_id", "nunique"), amount_cny=("amount_cny", "sum"))
        .reset_index()
    )


def unresolved_complaints(tickets: pd.DataFrame, quarter: Quarter, timezone: str) -> pd.Series:
    """Customer ids with a complaint opened by the quarter's end and not resolved by then."""
    end = pd.Timestamp(quarter.end_utc(timezone))
    complaint = tickets[(tickets["category"] == COMPLAINT_CATEGORY) & (tickets["opened_at"] < end)]
    open_ = complaint["resolved_at"].isna() | (complaint["resolved_at"] >= end)
    return pd.Series(sorted(complaint.loc[open_, "customer_id"].unique()), dtype=object)


def lifecycle_stages(
    customers: pd.Series,
    sales: pd.DataFrame,
    overdue_days: pd.DataFrame,
    unresolved: pd.Series,
    quarter: Quarter,
    settings: TierSettings,
    earlier_first_purchase: pd.Series | None = None,
) -> pd.DataFrame:
    """One row per customer in ``customers``: ``customer_id``, ``lifecycle_stage``.

    First rule that holds wins: potential (no purchase up to the quarter's end); churned
    (bought before, nothing in the last ``churn_quiet_quarters``); new (first purchase in
    the last ``new_customer_quarters``); at_risk (orders or amount this quarter at most
    ``at_risk_drop_share`` of last quarter's, or an invoice overdue more than
    ``overdue_risk_days``); loyal (bought in at least ``loyal_min_active_quarters`` of the
    last ``loyal_window_quarters`` and no unresolved complaint); otherwise active.
    ``overdue_days`` has ``customer_id``, ``max_overdue_days``. ``earlier_first_purchase``
    (customer_id -> date): first purchases on orders no longer in ``sales`` (a window of
    recent history), all before its oldest order.
    """
    if customers.dtype.kind not in "iu":  # ids as text (integer codes stay integers)
        customers = customers.astype(object)
    ids = pd.Index(pd.unique(customers), name="customer_id")
    end = _ts(quarter.end_date)
    upto = sales[sales["order_date"] <= end]
    first = upto.groupby("customer_id")["order_date"].min()
    if earlier_first_purchase is not None and len(earlier_first_purchase):
        first = pd.concat([first, earlier_first_purchase]).groupby(level=0).min()
    first_purchase = first.reindex(ids)
    span = max(settings.churn_quiet_quarters, settings.loyal_window_quarters, 2)
    per_q = quarterly_purchases(upto, quarter, span)
    orders = per_q.pivot_table(
        index="customer_id", columns="offset", values="orders", aggfunc="sum", fill_value=0
    ).reindex(index=ids, columns=range(span), fill_value=0)
    amount = per_q.pivot_table(
        index="customer_id", columns="offset", values="amount_cny", aggfunc="sum", fill_value=0.0
    ).reindex(index=ids, columns=range(span), fill_value=0.0)
    overdue = overdue_days.set_index("customer_id")["max_overdue_days"].reindex(ids).fillna(0)

    never = first_purchase.isna()
    quiet = (orders.iloc[:, : settings.churn_quiet_quarters] == 0).all(axis=1)
    new = first_purchase >= _ts(quarter.shift(-(settings.new_customer_quarters - 1)).start_date)
    drop = settings.at_risk_drop_share
    fell = ((orders[1] > 0) & (orders[0] <= drop * orders[1])) | (
        (amount[1] > 0) & (amount[0] <= drop * amount[1])
    )
    at_risk = fell | (overdue > settings.overdue_risk_days)
    active_quarters = (orders.iloc[:, : settings.loyal_window_quarters] > 0).sum(axis=1)
    loyal = (active_quarters >= settings.loyal_min_active_quarters) & ~ids.isin(unresolved)
    stage = np.select(
        [never, quiet, new, at_risk, loyal],
        ["potential", "churned", "new", "at_risk", "loyal"],
        default="active",
    )
    return pd.DataFrame({"customer_id": ids, "lifecycle_stage": stage})


def customer_quarter(
    customers: pd.DataFrame,
    sales: pd.DataFrame,
    invoices: pd.DataFrame,
    payments: pd.DataFrame,
    tickets: pd.DataFrame,
    contacts: pd.DataFrame,
    quarter: Quarter,
    settings: TierSettings,
    timezone: str,
    previous_grades: pd.DataFrame | None = None,
    earlier_first_purchase: pd.Series | None = None,
    older_overdue: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per customer in ``customers`` (``customer_id``, ``region``, ``industry``,
    ``account_manager``) for ``quarter``: value tier, contribution, credit grade, lifecycle
    stage, risk flags and the both-ends markers (``is_big_customer``, ``is_risk_customer``).

    ``previous_grades`` (``customer_id``, ``credit_grade``) are the previous quarter's
    grades, e.g. its own output: computed here when not given. ``earlier_first_purchase``:
    see :func:`lifecycle_stages`. ``older_overdue``: :func:`overdue_before_window` when
    ``invoices`` do not reach back that far (a window of history); computed here when not
    given. ``max_overdue_days`` and the overdue flag count those invoices too.
    """
    tiers = value_tiers(sales, quarter, settings)
    grades = credit_grades(invoices, payments, quarter, settings)
    if previous_grades is None:
        previous_grades = credit_grades(invoices, payments, quarter.previous(), settings)
    if older_overdue is None:
        older_overdue = overdue_before_window(invoices, payments, quarter, settings)
    overdue = pd.concat(
        [grades[["customer_id", "max_overdue_days"]], older_overdue], ignore_index=True
    )
    overdue = overdue.groupby("customer_id", sort=True)["max_overdue_days"].max().reset_index()
    if overdue.empty:  # keyed like the customers, for the merges below
        overdue = pd.DataFrame(
            {
                "customer_id": customers["customer_id"].iloc[:0],
                "max_overdue_days": pd.Series(dtype="float64"),
            }
        )
    unresolved = unresolved_complaints(tickets, quarter, timezone)
    stages = lifecycle_stages(
        customers["customer_id"],
        sales,
        overdue,
        unresolved,
        quarter,
        settings,
        earlier_first_purchase,
    )
    out = customers[["customer_id", "region", "industry", "account_manager"]].drop_duplicates(
        "customer_id"
    )
    out = out.merge(tiers[["customer_id", "value_tier", "contribution_cny"]], how="left")
    out = out.merge(
        grades[["customer_id", "credit_grade", "collected_share", "longest_cycle_days"]],
        how="left",
    )
    out = out.merge(overdue, how="left")
    out = out.merge(stages, how="left")
    prev = previous_grades.set_index("customer_id")["credit_grade"]
    rank = {g: i for i, g in enumerate(GRADE_ORDER)}
    now_rank = out["credit_grade"].map(rank)
    prev_rank = out["customer_id"].map(prev).map(rank)
    start, end = pd.Timestamp(quarter.start_utc(timezone)), pd.Timestamp(quarter.end_utc(timezone))
    p_start = pd.Timestamp(quarter.previous().start_utc(timezone))
    complaints = tickets[tickets["category"] == COMPLAINT_CATEGORY]
    this_q = complaints[(complaints["opened_at"] >= start) & (complaints["opened_at"] < end)]
    last_q = complaints[(complaints["opened_at"] >= p_start) & (complaints["opened_at"] < start)]
    n_now = out["customer_id"].map(this_q["customer_id"].value_counts()).fillna(0)
    n_prev = out["customer_id"].map(last_q["customer_id"].value_counts()).fillna(0)
    contacted = contacts[(contacts["contacted_at"] >= start) & (contacts["contacted_at"] < end)]
    out["is_overdue_over_90_days"] = (
        out["max_overdue_days"].fillna(0) > settings.overdue_risk_days
    ).astype(bool)
    out["is_credit_grade_fell"] = (now_rank > prev_rank).fillna(False).astype(bool)
    out["is_complaints_rising"] = (n_now > n_prev).astype(bool)
    out["is_a_tier_without_contact"] = (
        (out["value_tier"] == "A") & ~out["customer_id"].isin(contacted["customer_id"])
    ).astype(bool)
    flags = [
        "is_overdue_over_90_days",
        "is_credit_grade_fell",
        "is_complaints_rising",
        "is_a_tier_without_contact",
    ]
    out["is_risk_customer"] = out[flags].any(axis=1).astype(bool)
    top = (
        out[out["contribution_cny"] > 0]
        .sort_values(["contribution_cny", "customer_id"], ascending=[False, True], kind="mergesort")
        .head(settings.both_ends_top_n)["customer_id"]
    )
    out["is_big_customer"] = out["customer_id"].isin(top).astype(bool)
    out["complaints"] = n_now.astype("int64")
    out["quarter"] = str(quarter)
    columns = [
        "quarter",
        "customer_id",
        "value_tier",
        "contribution_cny",
        "credit_grade",
        "collected_share",
        "longest_cycle_days",
        "max_overdue_days",
        "lifecycle_stage",
        *flags,
        "is_big_customer",
        "is_risk_customer",
        "complaints",
        "region",
        "industry",
        "account_manager",
    ]
    out = out[columns].sort_values("customer_id", kind="mergesort").reset_index(drop=True)
    # Text columns stay text when a quarter has no values at all (before the first invoice,
    # say): the warehouse table takes its column types from the first quarter written.
    for column in ("value_tier", "credit_grade", "lifecycle_stage", "region", "industry"):
        out[column] = out[column].astype(object)
    out["account_manager"] = out["account_manager"].astype(object)
    return out


def both_ends(customer_quarter_df: pd.DataFrame) -> pd.DataFrame:
    """The leadership list (抓两头): big or risk customers of one quarter, one row each,
    with ``reason`` (``big``, ``risk`` or ``big+risk``), biggest contribution first."""
    picked = customer_quarter_df[
        customer_quarter_df["is_big_customer"] | customer_quarter_df["is_risk_customer"]
    ].copy()
    picked["reason"] = np.select(
        [picked["is_big_customer"] & picked["is_risk_customer"], picked["is_big_customer"]],
        ["big+risk", "big"],
        default="risk",
    )
    return picked.sort_values(
        ["contribution_cny", "customer_id"], ascending=[False, True], na_position="last"
    ).reset_index(drop=True)


def tier_migration(current: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
    """Tier migration matrix between two quarters: one row per (from_tier, to_tier) with
    ``customers``; untiered customers appear as ``"-"``. ``movement`` is up/down/same."""
    cur = current.set_index("customer_id")["value_tier"]
    prev = previous.set_index("customer_id")["value_tier"]
    ids = cur.index.union(prev.index)
    pairs = pd.DataFrame(
        {
            "from_tier": prev.reindex(ids).fillna("-").to_numpy(),
            "to_tier": cur.reindex(ids).fillna("-").to_numpy(),
        }
    )
    counts = pairs.value_counts().rename("customers").reset_index()
    order = {"A": 0, "B": 1, "C": 2, "-": 3}
    delta = counts["to_tier"].map(order) - counts["from_tier"].map(order)
    counts["movement"] = np.select([delta < 0, delta > 0], ["up", "down"], default="same")
    return counts.sort_values(["from_tier", "to_tier"]).reset_index(drop=True)
