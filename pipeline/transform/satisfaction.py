"""Satisfaction and service metrics of one quarter, overall and by segment.

Pure functions. Output grain of :func:`quarter_metrics`: one row per (metric, dimension,
segment) with ``value`` and ``n`` (the number of answers, tickets or customers behind the
value). :func:`with_changes` adds the previous quarter's value, the change and the
small-group marker (n below ``small_group_n``: shown, not hidden, not over-read).

Input frames (extra columns ignored; ``*_at`` naive UTC):

- ``surveys``: ``customer_id``, ``answered_at``, ``csat_score``, ``nps_score``.
- ``tickets``: ``ticket_id``, ``customer_id``, ``opened_at``, ``channel``, ``category``,
  ``touchpoint``, ``first_response_at``, ``resolved_at``.
- ``segments``: one row per customer of the quarter (``customer_id``, ``value_tier``,
  ``region``, ``industry``, ``lifecycle_stage``), e.g. the quarter's ``mart_customer_quarter``.
- ``previous_segments``: the same for the previous quarter.
- ``activity``: ``customer_id`` and ``offset`` (0 = this quarter, 1 = previous) of purchases.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.quarters import Quarter
from pipeline.settings import MetricSettings

SEGMENT_DIMENSIONS = ("value_tier", "region", "industry")
DIMENSION_NAMES = {"value_tier": "tier", "region": "region", "industry": "industry"}
# The feedback categories of the complaint mix (DOMAIN.md); general inquiries are not complaints.
COMPLAINT_CATEGORIES = (
    "service_quality_suggestion",
    "service_need_suggestion",
    "service_quality_complaint",
)
METRIC_COLUMNS = ["metric", "dimension", "segment", "value", "n"]


def _in_quarter(at: pd.Series, quarter: Quarter, timezone: str) -> pd.Series:
    start, end = pd.Timestamp(quarter.start_utc(timezone)), pd.Timestamp(quarter.end_utc(timezone))
    return (at >= start) & (at < end)


def nps(scores: pd.Series, settings: MetricSettings) -> float:
    """Net promoter score in [-100, 100]; NaN when there are no answers."""
    s = scores.dropna()
    if s.empty:
        return float("nan")
    promoters = (s >= settings.nps_promoter_min).mean()
    detractors = (s <= settings.nps_detractor_max).mean()
    return float(100.0 * (promoters - detractors))


def ticket_sla(tickets: pd.DataFrame, quarter: Quarter, settings: MetricSettings, timezone: str):
    """Tickets opened in the quarter with ``hours_to_response``, ``is_sla_met`` (None when the
    deadline is still after the quarter's end and no response yet: not judged) and
    ``resolution_hours``."""
    t = tickets[_in_quarter(tickets["opened_at"], quarter, timezone)].copy()
    end = pd.Timestamp(quarter.end_utc(timezone))
    hours = (t["first_response_at"] - t["opened_at"]).dt.total_seconds() / 3600.0
    deadline = t["opened_at"] + pd.Timedelta(hours=settings.first_response_sla_hours)
    met = hours <= settings.first_response_sla_hours
    judged = t["first_response_at"].notna() | (deadline <= end)
    t["hours_to_response"] = hours
    t["is_sla_met"] = met.where(judged)
    t["resolution_hours"] = (t["resolved_at"] - t["opened_at"]).dt.total_seconds() / 3600.0
    return t


def _survey_rows(df: pd.DataFrame, dimension: str, segment: str, settings: MetricSettings):
    csat = df["csat_score"].dropna()
    npss = df["nps_score"].dropna()
    return [
        (
            "csat_top2_share",
            dimension,
            segment,
            float((csat >= settings.csat_top_box_min).mean()) if len(csat) else np.nan,
            len(csat),
        ),
        ("csat_mean", dimension, segment, float(csat.mean()) if len(csat) else np.nan, len(csat)),
        ("nps", dimension, segment, nps(npss, settings), len(npss)),
    ]


def _ticket_rows(df: pd.DataFrame, dimension: str, segment: str):
    """SLA first (the channel breakdown keeps only that row)."""
    complaints = int(df["category"].isin(COMPLAINT_CATEGORIES).sum())
    judged = df["is_sla_met"].dropna()
    resolved = df["resolution_hours"].dropna()
    return [
        (
            "first_response_sla_share",
            dimension,
            segment,
            float(judged.astype(float).mean()) if len(judged) else np.nan,
            len(judged),
        ),
        (
            "resolution_median_hours",
            dimension,
            segment,
            float(resolved.median()) if len(resolved) else np.nan,
            len(resolved),
        ),
        (
            "resolution_p90_hours",
            dimension,
            segment,
            float(resolved.quantile(0.9)) if len(resolved) else np.nan,
            len(resolved),
        ),
        ("complaint_count", dimension, segment, float(complaints), len(df)),
    ]


def _customer_rows(seg: pd.DataFrame, dimension: str, segment: str):
    before = seg["was_active"]
    retained = seg.loc[before, "is_active"]
    churned = seg["became_churned"]
    return [
        (
            "retention_rate",
            dimension,
            segment,
            float(retained.mean()) if len(retained) else np.nan,
            len(retained),
        ),
        ("churned_customers", dimension, segment, float(churned.sum()), len(seg)),
    ]


def customer_status(
    segments: pd.DataFrame, previous_segments: pd.DataFrame, activity: pd.DataFrame
) -> pd.DataFrame:
    """One row per customer of the quarter: segment columns plus ``was_active`` (bought last
    quarter), ``is_active`` (bought this quarter), ``became_churned`` (churned now, not before)
    and ``cohort_value_tier``: the tier held at the previous quarter's end, by which retention
    and churn are broken down (a customer who just churned has no tier any more)."""
    out = segments[["customer_id", *SEGMENT_DIMENSIONS, "lifecycle_stage"]].copy()
    now = set(activity.loc[activity["offset"] == 0, "customer_id"])
    before = set(activity.loc[activity["offset"] == 1, "customer_id"])
    out["is_active"] = out["customer_id"].isin(now)
    out["was_active"] = out["customer_id"].isin(before)
    prev_stage = out["customer_id"].map(
        previous_segments.set_index("customer_id")["lifecycle_stage"]
    )
    out["became_churned"] = (out["lifecycle_stage"] == "churned") & (prev_stage != "churned")
    out["cohort_value_tier"] = out["customer_id"].map(
        previous_segments.set_index("customer_id")["value_tier"]
    )
    return out


def quarter_metrics(
    surveys: pd.DataFrame,
    tickets: pd.DataFrame,
    customers: pd.DataFrame,
    quarter: Quarter,
    settings: MetricSettings,
    timezone: str,
) -> pd.DataFrame:
    """Long metric table of one quarter (see module doc); ``customers`` is
    :func:`customer_status`'s output. Segment ``"unknown"`` holds customers without a value."""
    seg = customers.set_index("customer_id")[list(SEGMENT_DIMENSIONS)].fillna("unknown")
    s = surveys[_in_quarter(surveys["answered_at"], quarter, timezone)]
    s = s.join(seg, on="customer_id")
    t = ticket_sla(tickets, quarter, settings, timezone).join(seg, on="customer_id")
    c = customers.copy()
    for column in SEGMENT_DIMENSIONS:
        s[column] = s[column].fillna("unknown")
        t[column] = t[column].fillna("unknown")
        c[column] = c[column].fillna("unknown")
    rows = _survey_rows(s, "overall", "all", settings) + _ticket_rows(t, "overall", "all")
    rows += _customer_rows(c, "overall", "all")
    for column in SEGMENT_DIMENSIONS:
        dimension = DIMENSION_NAMES[column]
        for value, group in s.groupby(column, sort=True):
            rows += _survey_rows(group, dimension, str(value), settings)
        for value, group in t.groupby(column, sort=True):
            rows += _ticket_rows(group, dimension, str(value))
        cohort = "cohort_value_tier" if column == "value_tier" else column
        for value, group in c.groupby(c[cohort].fillna("unknown"), sort=True):
            rows += _customer_rows(group, dimension, str(value))
    for value, group in t.groupby(t["channel"].fillna("unknown"), sort=True):
        rows += _ticket_rows(group, "channel", str(value))[:1]
    complaints = t[t["category"].isin(COMPLAINT_CATEGORIES)]
    for column in ("category", "touchpoint"):
        counts = complaints[column].fillna("unknown").value_counts().sort_index()
        for value, count in counts.items():
            rows.append(("complaint_count", column, str(value), float(count), int(count)))
            share = count / len(complaints)
            rows.append(("complaint_share", column, str(value), share, int(count)))
    out = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    out["value"] = out["value"].astype("float64")
    out["n"] = out["n"].astype("int64")
    return out.sort_values(["metric", "dimension", "segment"], kind="mergesort").reset_index(
        drop=True
    )


def with_changes(
    current: pd.DataFrame, previous: pd.DataFrame | None, settings: MetricSettings
) -> pd.DataFrame:
    """``current`` plus ``previous_value``, ``change`` (current - previous) and
    ``is_small_group`` (n below ``settings.small_group_n``)."""
    out = current.copy()
    key = ["metric", "dimension", "segment"]
    if previous is not None and not previous.empty:
        prev = previous[[*key, "value"]].rename(columns={"value": "previous_value"})
        out = out.merge(prev, on=key, how="left")
    else:
        out["previous_value"] = np.nan
    out["previous_value"] = out["previous_value"].astype("float64")
    out["change"] = out["value"] - out["previous_value"]
    out["is_small_group"] = (out["n"] < settings.small_group_n).astype(bool)
    return out


def sla_offenders(
    tickets: pd.DataFrame,
    quarter: Quarter,
    settings: MetricSettings,
    timezone: str,
    top_n: int = 20,
) -> pd.DataFrame:
    """Worst first-response offenders of the quarter: one row per customer with a missed
    SLA (``customer_id``, ``tickets``, ``missed``, ``met_share``, ``worst_hours``), most misses
    first (then slowest response)."""
    t = ticket_sla(tickets, quarter, settings, timezone)
    t = t[t["is_sla_met"].notna()]
    t = t.assign(missed=~t["is_sla_met"].astype(bool))
    per = t.groupby("customer_id").agg(
        tickets=("missed", "size"),
        missed=("missed", "sum"),
        worst_hours=("hours_to_response", "max"),
    )
    per = per[per["missed"] > 0].reset_index()
    per["met_share"] = 1 - per["missed"] / per["tickets"]
    per["missed"] = per["missed"].astype("int64")
    per = per.sort_values(
        ["missed", "worst_hours", "customer_id"],
        ascending=[False, False, True],
        na_position="first",
    )
    return per.head(top_n).reset_index(drop=True)[
        ["customer_id", "tickets", "missed", "met_share", "worst_hours"]
    ]
