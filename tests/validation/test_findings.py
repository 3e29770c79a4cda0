"""Customer-file findings: one test per finding code, with passing and failing records."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from pipeline.validation.findings import (
    customer_findings,
    is_valid_email,
    is_valid_phone,
    is_valid_uscc,
)

AS_OF = datetime(2026, 11, 23, 2, 0)
GOOD_CUSTOMER = {
    "source_record_id": "C1",
    "customer_name": "北京甲科技有限公司",
    "uscc": "91110108551385082Q",
    "industry": "制造业",
    "province": "北京市",
    "city": "北京市",
    "phone": "010-6234 5678",
    "email": "info@jia.com.cn",
    "account_manager": "王经理",
    "updated_at": pd.Timestamp("2026-11-01"),
}
GOOD_CONTACT = {
    "source_record_id": "CT1",
    "customer_record_id": "C1",
    "mobile_phone": "138 1234 5678",
    "office_phone": None,
    "email": "zhang.san@jia.com.cn",
    "is_key_person": True,
}


def findings(
    customer: dict | None = None, contacts: list[dict] | None = None, summary: str | None = "已沟通"
) -> pd.DataFrame:
    customers = pd.DataFrame([{**GOOD_CUSTOMER, **(customer or {})}])
    contact_frame = pd.DataFrame(contacts if contacts is not None else [GOOD_CONTACT])
    contact_frame["is_key_person"] = contact_frame["is_key_person"].astype("boolean")
    log = pd.DataFrame([{"source_record_id": "L1", "customer_record_id": "S1", "summary": summary}])
    return customer_findings(customers, contact_frame, log, "2026Q4", AS_OF, stale_after_days=92)


def test_a_complete_file_has_no_findings() -> None:
    assert findings().empty


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"uscc": None}, "uscc_missing", "uscc"),
        ({"uscc": "91110108551385082A"}, "uscc_invalid", "uscc"),
        ({"phone": "010-6234 56"}, "phone_invalid", "phone"),
        ({"email": "info@jia"}, "email_invalid", "email"),
        ({"industry": None}, "industry_missing", "industry"),
        ({"city": None}, "region_missing", "province/city"),
        ({"account_manager": None}, "account_manager_missing", "account_manager"),
        ({"updated_at": pd.Timestamp("2026-08-01")}, "stale_file", "updated_at"),
    ],
)
def test_customer_record_findings(change: dict, code: str, field: str) -> None:
    result = findings(change)
    assert result[["finding", "field", "source_record_id"]].to_dict("records") == [
        {"finding": code, "field": field, "source_record_id": "C1"}
    ]
    row = result.iloc[0]
    assert row["quarter"] == "2026Q4" and row["customer_record_id"] == "C1"
    assert row["severity"] in {"high", "medium", "low"}
    if code == "account_manager_missing":
        assert pd.isna(row["account_manager"])
    else:
        assert row["account_manager"] == "王经理"


def test_updated_just_inside_the_window_is_not_stale() -> None:
    assert findings({"updated_at": pd.Timestamp("2026-08-24")}).empty


def test_details_carry_no_personal_values() -> None:
    result = findings({"phone": "010-6234 56", "email": "wang@jia"})
    text = " ".join(result["detail"])
    assert "6234" not in text and "wang" not in text


def test_key_contact_findings() -> None:
    no_key = findings(contacts=[{**GOOD_CONTACT, "is_key_person": False}])
    assert no_key["finding"].tolist() == ["key_contact_missing"]
    no_phone = findings(contacts=[{**GOOD_CONTACT, "mobile_phone": None, "office_phone": None}])
    assert no_phone[["dataset", "source_record_id", "finding", "customer_record_id"]].to_dict(
        "records"
    ) == [
        {
            "dataset": "sales_contacts",
            "source_record_id": "CT1",
            "finding": "key_contact_phone_missing",
            "customer_record_id": "C1",
        }
    ]
    # a non-key person without a phone is legitimate
    other = {
        **GOOD_CONTACT,
        "source_record_id": "CT2",
        "is_key_person": False,
        "mobile_phone": None,
    }
    assert findings(contacts=[GOOD_CONTACT, other]).empty


def test_contact_phone_and_email_findings() -> None:
    broken = {**GOOD_CONTACT, "mobile_phone": "138 1234 567", "email": "zhang.san@"}
    result = findings(contacts=[broken])
    assert sorted(zip(result["finding"], result["field"], strict=True)) == [
        ("email_invalid", "email"),
        ("phone_invalid", "mobile_phone"),
    ]


def test_contact_report_missing() -> None:
    result = findings(summary=None)
    assert result[["dataset", "finding", "source_system"]].to_dict("records") == [
        {
            "dataset": "service_contact_log",
            "finding": "contact_report_missing",
            "source_system": "service",
        }
    ]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("010-1234 5678", True),
        ("+86 10 12345678", True),
        ("13812345678", True),
        ("(0755)8888 6666转123", True),
        ("021-8000 2969", True),  # well-formed, not in phonenumbers' allocation tables
        ("1381234567", False),
        ("0931-25589902", False),  # Lanzhou numbers have 7 local digits
        ("025 360320", False),
        ("138l2345678", False),
        (None, False),
    ],
)
def test_phone_parsing(value: str | None, valid: bool) -> None:
    assert is_valid_phone(value) is valid


def test_uscc_and_email_syntax() -> None:
    assert is_valid_uscc("91110108551385082Q") and not is_valid_uscc("91110108551385082")
    assert (
        is_valid_email("a.b@c.com.cn")
        and not is_valid_email("a b@c.cn")
        and not is_valid_email(None)
    )
