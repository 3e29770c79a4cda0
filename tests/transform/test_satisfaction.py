"""Satisfaction metric rules on hand-built frames, plus property tests."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.quarters import Quarter
from pipeline.settings import MetricSettings
from pipeline.transform import satisfaction

Q3 = Quarter(2026, 3)
TZ = "Asia/Shanghai"
CFG = MetricSettings()
# 2026Q3 in Asia/Shanghai = [2026-06-30 16:00, 2026-09-30 16:00) UTC.
IN_Q3 = "2026-08-01 02:00"


def surveys(rows: list[tuple[str, str, float | None, float | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "answered_at": pd.to_datetime([r[1] for r in rows]),
            "csat_score": pd.array([r[2] for r in rows], dtype="Int64"),
            "nps_score": pd.array([r[3] for r in rows], dtype="Int64"),
        }
    )


def tickets(rows: list[dict]) -> pd.DataFrame:
    base = {
        "ticket_id": None,
        "customer_id": "c1",
        "opened_at": IN_Q3,
        "channel": "phone",
        "category": "service_quality_complaint",
        "touchpoint": "delivery",
        "first_response_at": None,
        "resolved_at": None,
    }
    frame = pd.DataFrame(
        [{**base, "ticket_id": f"t{i}", **r} for i, r in enumerate(rows)], columns=list(base)
    )
    for column in ("opened_at", "first_response_at", "resolved_at"):
        frame[column] = pd.to_datetime(frame[column])
    return frame


def customers(ids: list[str], tier: str = "A") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ids,
            "value_tier": tier,
            "cohort_value_tier": tier,
            "region": "北京",
            "industry": "制造",
            "lifecycle_stage": "loyal",
            "is_active": True,
            "was_active": True,
            "became_churned": False,
        }
    )


def metric(frame: pd.DataFrame, name: str, dimension: str = "overall", segment: str = "all"):
    row = frame[
        (frame["metric"] == name)
        & (frame["dimension"] == dimension)
        & (frame["segment"] == segment)
    ]
    assert len(row) == 1, f"{name}/{dimension}/{segment}: {len(row)} rows"
    return row.iloc[0]


def compute(s: pd.DataFrame, t: pd.DataFrame, c: pd.DataFrame | None = None) -> pd.DataFrame:
    return satisfaction.quarter_metrics(s, t, customers(["c1"]) if c is None else c, Q3, CFG, TZ)


def test_csat_top2_and_mean_and_nps() -> None:
    s = surveys(
        [
            ("c1", IN_Q3, 5, 10),
            ("c1", IN_Q3, 4, 9),
            ("c1", IN_Q3, 3, 7),
            ("c1", IN_Q3, 1, 6),
            ("c1", IN_Q3, None, 0),
            ("c1", "2026-06-30 15:59", 1, 0),  # 23:59 on 30 June in Shanghai: Q2
        ]
    )
    out = compute(s, tickets([]))
    assert metric(out, "csat_top2_share")["value"] == pytest.approx(0.5)
    assert metric(out, "csat_top2_share")["n"] == 4
    assert metric(out, "csat_mean")["value"] == pytest.approx(13 / 4)
    # 2 promoters, 1 passive, 2 detractors of 5.
    assert metric(out, "nps")["value"] == pytest.approx(100 * (2 - 2) / 5)
    assert metric(out, "nps")["n"] == 5


def test_first_response_sla_boundary_and_unjudged_tickets() -> None:
    t = tickets(
        [
            {"first_response_at": "2026-08-02 02:00"},  # exactly 24 h: met
            {"first_response_at": "2026-08-02 02:01", "channel": "email"},  # missed
            {"opened_at": "2026-08-03 00:00"},  # no response, deadline passed: missed
            {"opened_at": "2026-09-30 10:00"},  # no response, deadline after Q3 end: not judged
            {"opened_at": "2026-10-05 00:00", "first_response_at": "2026-10-05 01:00"},  # Q4
        ]
    )
    out = compute(surveys([]), t)
    sla = metric(out, "first_response_sla_share")
    assert sla["n"] == 3
    assert sla["value"] == pytest.approx(1 / 3)
    assert metric(out, "first_response_sla_share", "channel", "email")["value"] == 0
    assert metric(out, "first_response_sla_share", "tier", "A")["n"] == 3
    offenders = satisfaction.sla_offenders(t, Q3, CFG, TZ)
    assert offenders.loc[0, "customer_id"] == "c1"
    assert offenders.loc[0, "missed"] == 2


def test_resolution_median_and_p90() -> None:
    t = tickets(
        [{"resolved_at": str(pd.Timestamp(IN_Q3) + pd.Timedelta(hours=h))} for h in range(1, 11)]
        + [{}]
    )
    out = compute(surveys([]), t)
    assert metric(out, "resolution_median_hours")["value"] == pytest.approx(5.5)
    assert metric(out, "resolution_p90_hours")["value"] == pytest.approx(9.1)
    assert metric(out, "resolution_p90_hours")["n"] == 10


def test_ticket_mix_by_category_and_touchpoint() -> None:
    t = tickets(
        [
            {"category": "service_quality_complaint", "touchpoint": "billing"},
            {"category": "service_quality_complaint", "touchpoint": "delivery"},
            {"category": "service_need_suggestion", "touchpoint": "delivery"},
            {"category": None, "touchpoint": "delivery"},
            {"category": "inquiry", "touchpoint": "presales"},
        ]
    )
    out = compute(surveys([]), t)
    share = metric(out, "complaint_share", "category", "service_quality_complaint")
    assert share["value"] == pytest.approx(2 / 3) and share["n"] == 2
    assert metric(out, "complaint_count", "touchpoint", "delivery")["value"] == 2
    assert metric(out, "complaint_share", "touchpoint", "billing")["value"] == pytest.approx(1 / 3)
    assert not (out["segment"].isin(["inquiry", "unknown", "presales"])).any()
    total = metric(out, "complaint_count")
    assert total["value"] == 3 and total["n"] == 5


def test_retention_and_churn_from_customer_status() -> None:
    segments = pd.DataFrame(
        {
            "customer_id": ["stay", "left", "newbie", "gone"],
            "value_tier": ["A", "B", "C", None],
            "region": "北京",
            "industry": "制造",
            "lifecycle_stage": ["loyal", "at_risk", "new", "churned"],
        }
    )
    previous = segments.assign(
        lifecycle_stage=["loyal", "loyal", "potential", "at_risk"], value_tier=["A", "A", None, "B"]
    )
    activity = pd.DataFrame(
        {"customer_id": ["stay", "stay", "left", "newbie"], "offset": [0, 1, 1, 0]}
    )
    status = satisfaction.customer_status(segments, previous, activity)
    out = compute(surveys([]), tickets([]), status)
    retention = metric(out, "retention_rate")
    assert retention["value"] == pytest.approx(0.5) and retention["n"] == 2
    assert metric(out, "churned_customers")["value"] == 1
    # Retention and churn by tier use last quarter's tier (the cohort).
    assert metric(out, "churned_customers", "tier", "B")["value"] == 1
    assert metric(out, "retention_rate", "tier", "A")["n"] == 2
    assert metric(out, "churned_customers", "region", "北京")["value"] == 1


def test_changes_and_small_groups() -> None:
    current = pd.DataFrame(
        {
            "metric": ["nps", "nps"],
            "dimension": ["overall", "tier"],
            "segment": ["all", "A"],
            "value": [10.0, 5.0],
            "n": [100, 29],
        }
    )
    previous = current.iloc[:1].assign(value=4.0)
    out = satisfaction.with_changes(current, previous, CFG)
    assert out.loc[0, "change"] == pytest.approx(6.0)
    assert math.isnan(out.loc[1, "previous_value"])
    assert list(out["is_small_group"]) == [False, True]
    assert out.loc[0, "n"] == 100  # small or not, nothing is hidden


@given(st.lists(st.integers(0, 10), max_size=60))
def test_nps_is_between_minus_and_plus_100(scores: list[int]) -> None:
    value = satisfaction.nps(pd.Series(scores, dtype="float64"), CFG)
    if scores:
        assert -100 <= value <= 100
    else:
        assert math.isnan(value)


survey_rows = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2", "c3"]),
        st.integers(0, 60 * 24 * 120),
        st.one_of(st.none(), st.integers(1, 5)),
        st.one_of(st.none(), st.integers(0, 10)),
    ),
    max_size=40,
)
ticket_rows = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2", "c3"]),
        st.integers(0, 60 * 24 * 120),
        st.one_of(st.none(), st.integers(0, 60 * 72)),
        st.sampled_from(["phone", "email", "social"]),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(survey_rows, ticket_rows, st.randoms())
def test_metrics_unchanged_by_row_order(s_rows, t_rows, rnd) -> None:
    start = pd.Timestamp("2026-06-15")
    s = surveys([(c, str(start + pd.Timedelta(minutes=m)), cs, n) for c, m, cs, n in s_rows])
    t = tickets(
        [
            {
                "customer_id": c,
                "opened_at": str(start + pd.Timedelta(minutes=m)),
                "first_response_at": None
                if r is None
                else str(start + pd.Timedelta(minutes=m + r)),
                "channel": ch,
            }
            for c, m, r, ch in t_rows
        ]
    )
    c = pd.concat([customers(["c1", "c2"], "A"), customers(["c3"], "B")], ignore_index=True)
    out = compute(s, t, c)
    seed = rnd.randint(0, 10_000)
    again = compute(
        s.sample(frac=1, random_state=seed),
        t.sample(frac=1, random_state=seed),
        c.sample(frac=1, random_state=seed),
    )
    pd.testing.assert_frame_equal(out, again, check_exact=False, rtol=1e-9)
    nps_rows = out[out["metric"] == "nps"]["value"].dropna()
    assert ((nps_rows >= -100) & (nps_rows <= 100)).all()
