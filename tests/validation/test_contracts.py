"""Contracts on core and mart tables: good frames pass, broken ones stop with the rule named."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.validation.contracts import ContractError, check_frame_contract


def test_good_core_customers_pass() -> None:
    frame = pd.DataFrame({"customer_id": ["K1", "K2"], "name": ["甲", "乙"]})
    summary = check_frame_contract("core_customers", frame)
    assert all(s["success"] for s in summary)


def test_duplicate_customer_id_stops_with_rule_and_example() -> None:
    frame = pd.DataFrame({"customer_id": ["K1", "K1", "K3"], "name": ["甲", "甲", "丙"]})
    with pytest.raises(
        ContractError,
        match=r"core_customers .*duplicate_key:customer_id.*2 rows.*example customer_id: K1",
    ):
        check_frame_contract("core_customers", frame)


def test_xref_compound_key_and_systems() -> None:
    good = pd.DataFrame(
        {
            "source_system": ["sales", "finance"],
            "source_record_id": ["C1", "C1"],
            "customer_id": ["K1", "K1"],
        }
    )
    check_frame_contract("core_customer_xref", good)
    bad = pd.concat([good, good.iloc[[0]].assign(source_system="crm")], ignore_index=True)
    with pytest.raises(ContractError, match="source_system is not sales, service or finance"):
        check_frame_contract("core_customer_xref", bad)


def test_mart_customer_quarter_tiers() -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["K1", "K2", "K3"],
            "value_tier": ["A", None, "B"],
            "credit_grade": ["A", "D", None],
            "lifecycle_stage": ["loyal", "potential", "at_risk"],
            "collected_share": [1.0, None, 0.5],
        }
    )
    check_frame_contract("mart_customer_quarter", frame)
    with pytest.raises(ContractError, match="value_tier is not A, B or C"):
        check_frame_contract("mart_customer_quarter", frame.assign(value_tier=["A", "E", None]))


def test_mart_metrics_key_is_unique() -> None:
    frame = pd.DataFrame(
        {
            "metric": ["nps", "nps"],
            "dimension": ["all", "all"],
            "segment": ["all", "all"],
            "n": [3, 3],
        }
    )
    with pytest.raises(ContractError, match="reported twice"):
        check_frame_contract("mart_metrics", frame)
