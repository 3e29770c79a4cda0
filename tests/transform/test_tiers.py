"""Tier rules on tiny hand-built frames, boundaries included, plus property tests."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.quarters import Quarter
from pipeline.settings import TierSettings
from pipeline.transform import tiers

Q3 = Quarter(2026, 3)
TZ = "Asia/Shanghai"
CFG = TierSettings()


def sales(rows: list[tuple[str, str, str, float, float | None]]) -> pd.DataFrame:
    """rows: (customer_id, order_id, order_date, amount, cost)."""
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "order_id": [r[1] for r in rows],
            "order_date": pd.to_datetime([r[2] for r in rows]),
            "amount_cny": [float(r[3]) for r in rows],
            "cost_cny": [float("nan") if r[4] is None else float(r[4]) for r in rows],
        }
    )


def invoices(rows: list[tuple[str, str, str, str | None, float]]) -> pd.DataFrame:
    """rows: (invoice_id, customer_id, invoice_date, due_date, amount)."""
    return pd.DataFrame(
        {
            "invoice_id": [r[0] for r in rows],
            "customer_id": [r[1] for r in rows],
            "invoice_date": pd.to_datetime([r[2] for r in rows]),
            "due_date": pd.to_datetime([r[3] for r in rows]),
            "amount_cny": [float(r[4]) for r in rows],
        }
    )


def payments(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "invoice_id": [r[0] for r in rows],
            "paid_date": pd.to_datetime([r[1] for r in rows]),
            "amount_cny": [float(r[2]) for r in rows],
        }
    )


def empty_tickets() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series([], dtype=object),
            "opened_at": pd.Series([], dtype="datetime64[ns]"),
            "category": pd.Series([], dtype=object),
            "resolved_at": pd.Series([], dtype="datetime64[ns]"),
        }
    )


# --- value tiers -------------------------------------------------------------------------


def test_margin_where_cost_known_else_revenue() -> None:
    frame = sales([("c1", "o1", "2026-08-01", 100, 60), ("c1", "o2", "2026-08-02", 50, None)])
    out = tiers.value_tiers(frame, Q3, CFG)
    assert out.loc[0, "contribution_cny"] == pytest.approx(40 + 50)


def test_cumulative_share_cuts() -> None:
    # shares 60/20/10/10: A takes the customers before 70% is reached, B the next 20%.
    frame = sales(
        [
            ("a", "o1", "2026-07-01", 60, None),
            ("b", "o2", "2026-07-01", 20, None),
            ("c", "o3", "2026-07-01", 10, None),
            ("d", "o4", "2026-07-01", 10, None),
        ]
    )
    out = tiers.value_tiers(frame, Q3, CFG).set_index("customer_id")["value_tier"]
    assert out.to_dict() == {"a": "A", "b": "A", "c": "B", "d": "C"}


def test_cut_exactly_at_seventy_percent_starts_tier_b() -> None:
    frame = sales([("a", "o1", "2026-07-01", 70, None), ("b", "o2", "2026-07-01", 30, None)])
    out = tiers.value_tiers(frame, Q3, CFG).set_index("customer_id")["value_tier"]
    assert out.to_dict() == {"a": "A", "b": "B"}


def test_window_first_day_included_day_before_excluded() -> None:
    # Trailing 12 months of 2026Q3 = 2025-10-01 .. 2026-09-30.
    frame = sales(
        [
            ("first_day", "o1", "2025-10-01", 10, None),
            ("too_early", "o2", "2025-09-30", 10, None),
            ("last_day", "o3", "2026-09-30", 10, None),
            ("too_late", "o4", "2026-10-01", 10, None),
        ]
    )
    out = tiers.value_tiers(frame, Q3, CFG)
    assert sorted(out["customer_id"]) == ["first_day", "last_day"]


def test_negative_margin_is_tier_c() -> None:
    frame = sales([("a", "o1", "2026-07-01", 100, 10), ("loss", "o2", "2026-07-01", 10, 50)])
    out = tiers.value_tiers(frame, Q3, CFG).set_index("customer_id")["value_tier"]
    assert out["loss"] == "C" and out["a"] == "A"


purchase_rows = st.lists(
    st.tuples(
        st.sampled_from([f"c{i}" for i in range(12)]),
        st.integers(0, 500),
        st.floats(0, 1e6, allow_nan=False),
        st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(purchase_rows, st.randoms())
def test_tiers_cover_every_purchasing_customer_once(rows, rnd) -> None:
    frame = sales(
        [
            (c, f"o{i}", str((pd.Timestamp("2025-10-01") + pd.Timedelta(days=d)).date()), a, k)
            for i, (c, d, a, k) in enumerate(rows)
        ]
    )
    out = tiers.value_tiers(frame, Q3, CFG)
    in_window = frame[frame["order_date"] <= pd.Timestamp("2026-09-30")]
    assert sorted(out["customer_id"]) == sorted(in_window["customer_id"].unique())
    assert out["customer_id"].is_unique
    assert set(out["value_tier"]) <= {"A", "B", "C"}
    # Row order does not change the result.
    shuffled = frame.sample(frac=1, random_state=rnd.randint(0, 10_000))
    again = tiers.value_tiers(shuffled, Q3, CFG)
    pd.testing.assert_frame_equal(out, again)


# --- credit grades -----------------------------------------------------------------------


def grade(inv: pd.DataFrame, pay: pd.DataFrame, quarter: Quarter = Q3) -> pd.Series:
    return tiers.credit_grades(inv, pay, quarter, CFG).set_index("customer_id")


def test_exactly_90_percent_collected_and_45_days_is_grade_a() -> None:
    # 90 of 100 collected: one invoice paid 45 days after issue, one open and not yet due.
    inv = invoices(
        [("i1", "c", "2026-01-01", "2026-01-31", 90), ("i2", "c", "2026-09-01", "2026-09-30", 10)]
    )
    pay = payments([("i1", "2026-02-15", 90)])
    out = grade(inv, pay)
    assert out.loc["c", "collected_share"] == pytest.approx(0.9)
    assert out.loc["c", "longest_cycle_days"] == 45
    assert out.loc["c", "credit_grade"] == "A"


def test_46_days_drops_to_grade_b() -> None:
    inv = invoices([("i1", "c", "2026-01-01", "2026-01-31", 100)])
    pay = payments([("i1", "2026-02-16", 100)])
    assert grade(inv, pay).loc["c", "credit_grade"] == "B"


def test_just_below_90_percent_is_grade_b() -> None:
    inv = invoices(
        [
            ("i1", "c", "2026-01-01", "2026-01-31", 89.9),
            ("i2", "c", "2026-09-01", "2026-09-30", 10.1),
        ]
    )
    pay = payments([("i1", "2026-01-10", 89.9)])
    out = grade(inv, pay)
    assert out.loc["c", "collected_share"] == pytest.approx(0.899)
    assert out.loc["c", "credit_grade"] == "B"


def test_best_grade_needs_both_conditions() -> None:
    # Fully collected but one invoice took 200 days: only D's cycle limit holds.
    inv = invoices([("i1", "c", "2025-06-01", "2025-07-01", 100)])
    pay = payments([("i1", "2025-12-18", 100)])
    assert grade(inv, pay).loc["c", "credit_grade"] == "D"


def test_below_30_percent_has_no_standing() -> None:
    inv = invoices([("i1", "c", "2026-09-01", "2026-09-30", 100)])
    pay = payments([("i1", "2026-09-10", 29)])
    assert grade(inv, pay).loc["c", "credit_grade"] == "none"


def test_open_invoice_ages_from_due_date_to_quarter_end() -> None:
    inv = invoices([("i1", "c", "2026-05-01", "2026-06-01", 100)])
    out = grade(inv, payments([]))
    # 2026-06-01 -> 2026-09-30 = 121 days overdue; its cycle runs from 2026-05-01: 152 days.
    assert out.loc["c", "max_overdue_days"] == 121
    assert out.loc["c", "longest_cycle_days"] == 152


def test_paying_a_late_invoice_never_lowers_the_grade() -> None:
    # 900 paid in 4 days; 100 issued 2026-05-01, due 2026-06-30. Paid on 2026-09-30 its
    # cycle is 152 days (grade D, 100% collected); left open it must not look better:
    # 90% collected, 152 days so far -> D as well (not C from 92 days past its due date).
    inv = invoices(
        [("i0", "c", "2026-07-01", "2026-07-31", 900), ("i1", "c", "2026-05-01", "2026-06-30", 100)]
    )
    paid = grade(inv, payments([("i0", "2026-07-05", 900), ("i1", "2026-09-30", 100)]))
    unpaid = grade(inv, payments([("i0", "2026-07-05", 900)]))
    assert paid.loc["c", "longest_cycle_days"] == 152
    assert paid.loc["c", "credit_grade"] == "D"
    assert unpaid.loc["c", "longest_cycle_days"] == 152
    assert unpaid.loc["c", "max_overdue_days"] == 92
    assert unpaid.loc["c", "credit_grade"] == "D"


def test_payments_after_quarter_end_do_not_count() -> None:
    inv = invoices([("i1", "c", "2026-09-01", "2026-09-30", 100)])
    pay = payments([("i1", "2026-10-01", 100)])
    assert grade(inv, pay).loc["c", "collected_share"] == 0


def test_duplicate_invoice_ids_are_refused() -> None:
    inv = invoices([("i1", "c", "2026-09-01", None, 1), ("i1", "d", "2026-09-02", None, 2)])
    with pytest.raises(ValueError, match="duplicated: i1"):
        tiers.credit_grades(inv, payments([]), Q3, CFG)


@given(
    st.lists(
        st.tuples(
            st.one_of(st.floats(-0.5, 1.5), st.just(float("nan"))),
            st.one_of(st.floats(-10, 400), st.just(float("nan"))),
        ),
        max_size=40,
    )
)
def test_grades_at_once_equal_grade_by_grade(pairs) -> None:
    for share, cycle in CFG.credit_grades.values():  # on and just past each boundary
        pairs = [*pairs, (share, cycle), (share - 1e-6, cycle), (share, cycle + 1)]
    share = pd.Series([p[0] for p in pairs], dtype="float64")
    cycle = pd.Series([p[1] for p in pairs], dtype="float64")
    expected = [tiers.grade_for(s, c, CFG) for s, c in zip(share, cycle, strict=True)]
    assert list(tiers.grades_for(share, cycle, CFG)) == expected


def test_credit_window_is_24_months() -> None:
    inv = invoices(
        [("old", "c", "2024-09-30", "2024-10-30", 100), ("in", "c", "2024-10-01", "2024-10-31", 50)]
    )
    pay = payments([("in", "2024-10-11", 50)])
    out = grade(inv, pay)
    assert out.loc["c", "billed_cny"] == 50
    assert out.loc["c", "credit_grade"] == "A"


# --- lifecycle ---------------------------------------------------------------------------


def stages(frame: pd.DataFrame, customers: list[str], overdue=None, unresolved=()) -> dict:
    od = (
        overdue
        if overdue is not None
        else pd.DataFrame({"customer_id": [], "max_overdue_days": []})
    )
    out = tiers.lifecycle_stages(
        pd.Series(customers), frame, od, pd.Series(list(unresolved), dtype=object), Q3, CFG
    )
    return out.set_index("customer_id")["lifecycle_stage"].to_dict()


def test_lifecycle_rules() -> None:
    frame = sales(
        [
            # new: first purchase on the first day of the 2-quarter window (2026-04-01)
            ("new", "n1", "2026-04-01", 10, None),
            ("not_new", "x1", "2026-03-31", 10, None),
            ("not_new", "x2", "2026-07-15", 10, None),
            ("not_new", "x3", "2026-08-15", 10, None),
            ("churned", "c1", "2025-09-30", 10, None),
            ("loyal", "l1", "2025-11-01", 10, None),
            ("loyal", "l2", "2026-02-01", 10, None),
            ("loyal", "l3", "2026-08-01", 10, None),
            ("falling", "f1", "2025-11-01", 10, None),
            ("falling", "f2", "2026-05-01", 10, None),
            ("falling", "f3", "2026-05-02", 10, None),
            ("falling", "f4", "2026-08-01", 10, None),
        ]
    )
    got = stages(frame, ["new", "not_new", "churned", "loyal", "falling", "potential"])
    assert got == {
        "new": "new",
        "not_new": "active",  # 2 of the last 4 quarters, no fall
        "churned": "churned",  # last purchase 2025-09-30, just before the 4-quarter window
        "loyal": "loyal",
        "falling": "at_risk",  # 2 orders last quarter, 1 this quarter: fell by half
        "potential": "potential",
    }


def test_unresolved_complaint_blocks_loyal_and_overdue_makes_at_risk() -> None:
    frame = sales(
        [
            (c, f"{c}{i}", d, 10, None)
            for c in ("a", "b")
            for i, d in enumerate(["2025-11-01", "2026-02-01", "2026-05-01", "2026-08-01"])
        ]
    )
    overdue = pd.DataFrame({"customer_id": ["b"], "max_overdue_days": [91.0]})
    got = stages(frame, ["a", "b"], overdue=overdue, unresolved=["a"])
    assert got == {"a": "active", "b": "at_risk"}
    overdue90 = pd.DataFrame({"customer_id": ["b"], "max_overdue_days": [90.0]})
    assert stages(frame, ["b"], overdue=overdue90)["b"] == "loyal"


def test_unresolved_complaints_as_of_quarter_end() -> None:
    tickets = pd.DataFrame(
        {
            "customer_id": ["open", "late_fix", "fixed", "other"],
            "opened_at": pd.to_datetime(["2026-08-01"] * 4),
            "category": ["service_quality_complaint"] * 3 + ["inquiry"],
            # quarter ends 2026-09-30 16:00 UTC (Asia/Shanghai midnight)
            "resolved_at": pd.to_datetime([None, "2026-09-30 16:00", "2026-09-30 15:59", None]),
        }
    )
    assert list(tiers.unresolved_complaints(tickets, Q3, TZ)) == ["late_fix", "open"]


# --- customer quarter, flags, migration ---------------------------------------------------


def test_customer_quarter_flags() -> None:
    customers = pd.DataFrame(
        {
            "customer_id": ["big", "quiet", "prospect"],
            "region": ["北京", "上海", None],
            "industry": ["制造", "零售", None],
            "account_manager": ["张三", "李四", None],
        }
    )
    frame = sales(
        [("big", "o1", "2026-08-01", 1000, None), ("quiet", "o2", "2026-08-01", 10, None)]
    )
    inv = invoices(
        [
            # 90% collected; i1 open: 76 days overdue at Q2's end (C), 168 at Q3's end (D)
            ("i0", "quiet", "2026-01-01", "2026-01-31", 900),
            ("i1", "quiet", "2026-04-01", "2026-04-15", 100),
            ("i2", "big", "2026-07-01", "2026-07-31", 100),
        ]
    )
    pay = payments([("i0", "2026-01-10", 900), ("i2", "2026-07-10", 100)])
    tickets = pd.DataFrame(
        {
            "customer_id": ["quiet", "quiet", "quiet"],
            "opened_at": pd.to_datetime(["2026-05-01", "2026-07-05", "2026-08-05"]),
            "category": ["service_quality_complaint"] * 3,
            "resolved_at": pd.to_datetime(["2026-05-02", "2026-07-06", "2026-08-06"]),
        }
    )
    contacts = pd.DataFrame(
        {"customer_id": ["big"], "contacted_at": pd.to_datetime(["2026-06-30 15:59"])}
    )  # 2026-06-30 23:59 Shanghai: still Q2, so no contact in Q3
    out = tiers.customer_quarter(
        customers, frame, inv, pay, tickets, contacts, Q3, CFG, TZ
    ).set_index("customer_id")
    assert out.loc["big", "value_tier"] == "A"
    assert bool(out.loc["big", "is_a_tier_without_contact"])
    assert bool(out.loc["big", "is_big_customer"])
    assert out.loc["quiet", "max_overdue_days"] == 168
    assert bool(out.loc["quiet", "is_overdue_over_90_days"])
    assert out.loc["quiet", "credit_grade"] == "D"
    assert bool(out.loc["quiet", "is_credit_grade_fell"])
    assert not bool(out.loc["big", "is_credit_grade_fell"])  # no grade last quarter
    assert bool(out.loc["quiet", "is_complaints_rising"])  # 2 in Q3 vs 1 in Q2
    assert bool(out.loc["quiet", "is_risk_customer"])
    assert out.loc["prospect", "lifecycle_stage"] == "potential"
    assert pd.isna(out.loc["prospect", "value_tier"])
    assert not bool(out.loc["prospect", "is_risk_customer"])
    ends = tiers.both_ends(out.reset_index())
    assert list(ends["customer_id"]) == ["big", "quiet"]
    assert list(ends["reason"]) == ["big+risk", "big+risk"]


def test_tier_migration_matrix() -> None:
    prev = pd.DataFrame({"customer_id": ["a", "b", "c"], "value_tier": ["A", "C", None]})
    cur = pd.DataFrame({"customer_id": ["a", "b", "c", "d"], "value_tier": ["B", "A", "C", None]})
    out = tiers.tier_migration(cur, prev).set_index(["from_tier", "to_tier"])
    assert out.loc[("A", "B"), "movement"] == "down"
    assert out.loc[("C", "A"), "movement"] == "up"
    assert out.loc[("-", "C"), "movement"] == "up"
    assert out["customers"].sum() == 4


def test_window_must_be_whole_quarters() -> None:
    with pytest.raises(ValueError, match="whole number of quarters"):
        tiers.window_start(Q3, 10)


invoice_rows = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2", "c3"]),
        st.integers(0, 900),
        st.integers(0, 90),
        st.floats(1, 1e5, allow_nan=False),
        st.lists(st.tuples(st.integers(0, 400), st.floats(0, 1e5, allow_nan=False)), max_size=3),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(invoice_rows, st.randoms())
def test_credit_grades_bounded_and_unchanged_by_row_order(rows, rnd) -> None:
    base = pd.Timestamp("2024-01-01")

    def day(n: int) -> str:
        return str((base + pd.Timedelta(days=n)).date())

    inv = invoices([(f"i{i}", c, day(d), day(d + t), a) for i, (c, d, t, a, _) in enumerate(rows)])
    pay = payments(
        [(f"i{i}", day(d + p), amt) for i, (_, d, _, _, ps) in enumerate(rows) for p, amt in ps]
    )
    out = tiers.credit_grades(inv, pay, Q3, CFG)
    assert out["customer_id"].is_unique
    assert out["collected_share"].between(0, 1).all()
    assert set(out["credit_grade"]) <= set(tiers.GRADE_ORDER)
    seed = rnd.randint(0, 10_000)
    again = tiers.credit_grades(
        inv.sample(frac=1, random_state=seed), pay.sample(frac=1, random_state=seed), Q3, CFG
    )
    pd.testing.assert_frame_equal(out, again)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["c1", "c2", "c3"]),
            st.integers(0, 600),  # invoice day offset from 2024-09-01
            st.one_of(st.none(), st.integers(0, 90)),  # due after invoice
            st.integers(1, 500),
        ),
        max_size=12,
    ),
    st.lists(
        st.tuples(st.integers(0, 14), st.integers(0, 700), st.integers(1, 400)),
        max_size=20,
    ),
)
def test_run_wide_invoice_keys_give_the_status_per_call_keys_give(
    invoice_rows, payment_rows
) -> None:
    """Keys made once for the whole run (build_inputs) give the status that keys made for
    this call give; payments of unknown invoices and with no invoice id match nothing."""
    base = pd.Timestamp("2024-09-01")
    inv = invoices(
        [
            (
                f"i{n}",
                customer,
                str((base + pd.Timedelta(days=day)).date()),
                None if due is None else str((base + pd.Timedelta(days=day + due)).date()),
                amount,
            )
            for n, (customer, day, due, amount) in enumerate(invoice_rows)
        ]
    )
    pay = pd.DataFrame(
        {
            "invoice_id": [f"i{n}" if n < 13 else None for n, _, _ in payment_rows],
            "paid_date": pd.to_datetime(
                [base + pd.Timedelta(days=day) for _, day, _ in payment_rows]
            ),
            "amount_cny": [float(a) for _, _, a in payment_rows],
        }
    )
    # run-wide keys numbered differently (reversed rows), an unknown invoice's payments too
    extra = pd.DataFrame({"invoice_id": ["unknown"], "paid_date": [base], "amount_cny": [5.0]})
    keyed_inv, keyed_pay = tiers.with_invoice_keys(inv.iloc[::-1], pd.concat([extra, pay]))
    per_call = tiers.invoice_status(inv, pay[pay["invoice_id"].notna()], Q3, CFG)
    run_wide = tiers.invoice_status(keyed_inv.iloc[::-1], keyed_pay, Q3, CFG)
    pd.testing.assert_frame_equal(run_wide, per_call)
    # every invoice's collected amount is the sum of its own payments up to quarter end
    paid = pay[pay["paid_date"] <= pd.Timestamp("2026-09-30")].groupby("invoice_id")["amount_cny"]
    expected = per_call["invoice_id"].astype(object).map(paid.sum()).astype(float).fillna(0.0)
    capped = expected.clip(upper=per_call["billed_cny"])
    assert ((per_call["collected_cny"] - capped).abs() < 1e-9).all()


def test_an_invoice_older_than_the_credit_window_still_counts_as_overdue() -> None:
    """The grade looks at 24 months; an invoice unpaid for three years is still overdue,
    and makes a risk customer. Paid in full by the quarter's end it does not."""
    customers = pd.DataFrame(
        {
            "customer_id": ["unpaid", "paid", "paid_later", "half"],
            "region": ["北京"] * 4,
            "industry": ["制造"] * 4,
            "account_manager": ["张三"] * 4,
        }
    )
    inv = invoices(
        [
            ("i1", "unpaid", "2023-06-01", "2023-07-01", 100),
            ("i2", "paid", "2023-06-01", "2023-07-01", 100),
            ("i3", "paid_later", "2023-06-01", None, 100),  # due: its invoice date
            ("i4", "half", "2023-06-01", "2023-07-01", 100),
        ]
    )
    pay = payments([("i2", "2023-08-01", 100), ("i3", "2026-10-15", 100), ("i4", "2023-08-01", 50)])
    none = sales([])
    tickets = empty_tickets().assign(resolved_at=pd.Series([], dtype="datetime64[ns]"))
    contacts = pd.DataFrame(
        {
            "customer_id": pd.Series([], dtype=object),
            "contacted_at": pd.Series([], dtype="datetime64[ns]"),
        }
    )
    out = tiers.customer_quarter(
        customers, none, inv, pay, tickets, contacts, Q3, CFG, TZ
    ).set_index("customer_id")
    # 2023-07-01 -> 2026-09-30: 1,187 days; from the invoice date 2023-06-01: 1,217.
    assert out.loc["unpaid", "max_overdue_days"] == 1187
    assert out.loc["paid_later", "max_overdue_days"] == 1217
    assert out.loc["half", "max_overdue_days"] == 1187
    assert pd.isna(out.loc["paid", "max_overdue_days"])
    assert list(out["is_overdue_over_90_days"]) == [True, False, True, True]
    assert bool(out.loc["unpaid", "is_risk_customer"])
    assert not bool(out.loc["paid", "is_risk_customer"])
    assert out["credit_grade"].isna().all()  # nothing billed in the window
