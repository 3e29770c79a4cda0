"""Each row-level rule of the suites, with passing and failing rows (GX runs on tiny frames)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from pipeline.datasets import DATASETS
from pipeline.settings import ValidationSettings
from pipeline.transform.staging import stage_frame
from pipeline.validation import DatasetOutcome, validate_dataset
from pipeline.validation.contracts import CONTRACT_TABLES
from pipeline.validation.rules import SUITE_DIR, build_suite, load_rules

TZ = "Asia/Shanghai"
EXTRACTED_AT = datetime(2026, 11, 23, 2, 0)


def raw_frame(dataset: str, rows: list[dict]) -> pd.DataFrame:
    """Raw text rows of ``dataset`` (unlisted columns blank) with lineage."""
    columns = DATASETS[dataset].house_columns
    frame = pd.DataFrame(
        [{c: row.get(c) for c in columns} for row in rows], columns=columns, dtype=object
    )
    frame.insert(0, "source_system", DATASETS[dataset].system)
    frame["batch_id"] = "b1"
    frame["extracted_at"] = pd.Timestamp(EXTRACTED_AT)
    return frame


def validate(
    dataset: str, rows: list[dict], parents: dict[str, list[dict]] | None = None
) -> DatasetOutcome:
    typed_parents = {
        name: stage_frame(raw_frame(name, parent_rows), DATASETS[name], TZ)[0]
        for name, parent_rows in (parents or {}).items()
    }
    return validate_dataset(
        DATASETS[dataset],
        raw_frame(dataset, rows),
        typed_parents,
        ValidationSettings(),
        TZ,
        EXTRACTED_AT,
    )


def codes(outcome: DatasetOutcome) -> dict[str, str]:
    return dict(
        zip(outcome.quarantine["source_record_id"], outcome.quarantine["defects"], strict=True)
    )


CUSTOMERS = {"sales_customers": [{"source_record_id": "C1", "customer_name": "甲公司"}]}
ORDER = {"customer_record_id": "C1", "order_date": "2026-08-01", "order_status": "已完成"}


def test_every_dataset_has_a_loadable_suite() -> None:
    for name in DATASETS:
        rules = load_rules(name)
        suite = build_suite(name, rules)
        assert len(suite.expectations) == len(rules) >= 3
        assert {r.code for r in rules} >= {"missing_required", "duplicate_key"}
    # One suite per source dataset plus one per downstream table contract.
    assert sorted(p.stem for p in SUITE_DIR.glob("*.yml")) == sorted([*DATASETS, *CONTRACT_TABLES])


def test_good_order_passes_and_unknown_customer_is_quarantined() -> None:
    outcome = validate(
        "sales_orders",
        [
            {"source_record_id": "O1", **ORDER},
            {"source_record_id": "O2", **ORDER, "customer_record_id": "C9"},
        ],
        CUSTOMERS,
    )
    assert outcome.valid["source_record_id"].tolist() == ["O1"]
    assert codes(outcome) == {"O2": "unknown_customer"}
    assert (
        "customer_record_id refers to a record that is not in sales_customers"
        in outcome.quarantine["reasons"].iloc[0]
    )


def test_duplicate_key_quarantines_only_the_later_copy() -> None:
    outcome = validate(
        "sales_orders",
        [
            {"source_record_id": "O1", **ORDER},
            {"source_record_id": "O1", **ORDER, "order_status": "执行中"},
        ],
        CUSTOMERS,
    )
    assert outcome.valid["order_status"].tolist() == ["completed"]
    assert codes(outcome) == {"O1": "duplicate_key"}
    assert '"order_status": "执行中"' in outcome.quarantine["raw_row"].iloc[0]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"order_date": None}, "missing_required"),
        ({"customer_record_id": None}, "missing_required"),
        ({"order_date": "1970-01-01"}, "date_out_of_range"),
        ({"order_date": "2099-03-01"}, "date_out_of_range"),
        ({"order_status": "作废"}, "invalid_value"),
    ],
)
def test_order_rules(change: dict, code: str) -> None:
    outcome = validate(
        "sales_orders",
        [{"source_record_id": "O1", **ORDER}, {"source_record_id": "O2", **ORDER, **change}],
        CUSTOMERS,
    )
    assert codes(outcome) == {"O2": code}
    assert outcome.rows_in == len(outcome.valid) + len(outcome.quarantine) == 2


def test_cast_error_reason_names_the_value() -> None:
    outcome = validate(
        "service_surveys",
        [
            {
                "source_record_id": "V1",
                "customer_record_id": "S1",
                "answered_at": "2026-08-01 10:00:00",
                "csat_score": "abc",
            }
        ],
        {
            "service_accounts": [{"source_record_id": "S1", "customer_name": "甲"}],
            "service_tickets": [],
        },
    )
    assert codes(outcome) == {"V1": "invalid_value"}
    assert "csat_score: 'abc' is not an integer" in outcome.quarantine["reasons"].iloc[0]


LINE = {"order_record_id": "O1", "amount_cny": "100", "cost_cny": "80", "quantity": "1"}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({}, None),
        ({"cost_cny": None}, None),  # unknown cost is legitimate
        ({"cost_cny": "100"}, None),  # cost equal to amount is allowed
        ({"amount_cny": "-100", "cost_cny": None}, "negative_amount"),
        ({"cost_cny": "120"}, "cost_exceeds_amount"),
        ({"order_record_id": "O9"}, "unknown_order"),
        ({"amount_cny": None}, "missing_required"),
    ],
)
def test_order_line_rules(change: dict, code: str | None) -> None:
    outcome = validate(
        "sales_order_lines",
        [{"source_record_id": "L1", **LINE, **change}],
        {"sales_orders": [{"source_record_id": "O1", **ORDER}]},
    )
    assert codes(outcome) == ({} if code is None else {"L1": code})


TICKET = {
    "customer_record_id": "S1",
    "opened_at": "2026-08-01 09:00:00",
    "channel": "电话",
    "first_response_at": "2026-08-01 10:00:00",
    "resolved_at": "2026-08-02 10:00:00",
}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({}, None),
        ({"first_response_at": None, "resolved_at": None}, None),  # open ticket
        ({"first_response_at": "2026-07-31 10:00:00"}, "response_before_open"),
        ({"resolved_at": "2026-07-30 10:00:00"}, "resolved_before_open"),
        ({"channel": None}, "missing_required"),
    ],
)
def test_ticket_rules(change: dict, code: str | None) -> None:
    outcome = validate(
        "service_tickets",
        [{"source_record_id": "T1", **TICKET, **change}],
        {"service_accounts": [{"source_record_id": "S1", "customer_name": "甲"}]},
    )
    assert codes(outcome) == ({} if code is None else {"T1": code})


@pytest.mark.parametrize(
    ("csat", "nps", "code"),
    [
        ("1", "0", None),
        ("5", "10", None),
        ("0", "5", "csat_out_of_range"),
        ("6", "5", "csat_out_of_range"),
        ("3", "11", "nps_out_of_range"),
    ],
)
def test_survey_score_ranges(csat: str, nps: str, code: str | None) -> None:
    outcome = validate(
        "service_surveys",
        [
            {
                "source_record_id": "V1",
                "customer_record_id": "S1",
                "answered_at": "2026-08-01 10:00:00",
                "csat_score": csat,
                "nps_score": nps,
            }
        ],
        {
            "service_accounts": [{"source_record_id": "S1", "customer_name": "甲"}],
            "service_tickets": [],
        },
    )
    assert codes(outcome) == ({} if code is None else {"V1": code})


INVOICE = {
    "source_record_id": "I1",
    "customer_record_id": "F1",
    "invoice_date": "2026-08-10",
    "amount_cny": "500",
}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({}, None),
        ({"paid_date": "2026-08-10"}, None),  # paid on the invoice day
        ({"paid_date": "2026-08-01"}, "payment_before_invoice"),
        ({"invoice_record_id": "I9"}, "unknown_invoice"),
        ({"amount_cny": "-5"}, "negative_amount"),
        ({"paid_date": "2098-05-01"}, "date_out_of_range"),
    ],
)
def test_payment_rules(change: dict, code: str | None) -> None:
    payment = {
        "source_record_id": "P1",
        "invoice_record_id": "I1",
        "customer_record_id": "F1",
        "paid_date": "2026-09-01",
        "amount_cny": "500",
    }
    outcome = validate("finance_payments", [{**payment, **change}], {"finance_invoices": [INVOICE]})
    assert codes(outcome) == ({} if code is None else {"P1": code})


def test_a_row_breaking_several_rules_lists_every_rule() -> None:
    outcome = validate(
        "sales_order_lines",
        [
            {
                "source_record_id": "L1",
                **LINE,
                "order_record_id": "O9",
                "amount_cny": "-1",
                "cost_cny": "5",
            }
        ],
        {"sales_orders": [{"source_record_id": "O1", **ORDER}]},
    )
    assert set(codes(outcome)["L1"].split(",")) == {
        "unknown_order",
        "negative_amount",
        "cost_exceeds_amount",
    }
    assert outcome.quarantine["reasons"].iloc[0].count(";") == 2


def test_an_unreadable_required_value_is_not_also_called_blank() -> None:
    # order_date is required: "2026-13-45" is there but unreadable, so its typed value is
    # missing; the row is quarantined for the unreadable value, not as "order_date is blank".
    outcome = validate(
        "sales_orders",
        [
            {"source_record_id": "O1", **ORDER, "order_date": "2026-13-45"},
            {"source_record_id": "O2", **ORDER, "order_date": None},
        ],
        CUSTOMERS,
    )
    assert codes(outcome) == {"O1": "invalid_value", "O2": "missing_required"}
    quarantine = outcome.quarantine
    reasons = dict(zip(quarantine["source_record_id"], quarantine["reasons"], strict=True))
    assert "'2026-13-45' is not a date" in reasons["O1"]
    assert "blank" not in reasons["O1"]
    assert "order_date is blank" in reasons["O2"]


def test_the_rules_that_quarantine_orphans_are_known(tmp_path) -> None:
    """A day's changes look for the records referring to a key that appeared among the
    quarantined rows only where a rule quarantines every row whose reference is unknown."""
    from pipeline.validation.rules import orphan_rules

    for dataset in DATASETS.values():
        assert set(orphan_rules(dataset)) == set(dataset.parents), dataset.name
    lines = DATASETS["sales_order_lines"]
    assert orphan_rules(lines) == {"order_record_id": "unknown_order"}
    suite = (SUITE_DIR / "sales_order_lines.yml").read_text(encoding="utf-8")
    # a rule that lets some orphans through does not count
    (tmp_path / "sales_order_lines.yml").write_text(
        suite.replace(
            "    column: _known_order_record_id\n",
            "    column: _known_order_record_id\n    row_condition: amount_cny>0\n",
        ),
        encoding="utf-8",
    )
    assert orphan_rules(lines, tmp_path) == {}
