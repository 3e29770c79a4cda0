"""Remembered results (pipeline.memo): what a memo gives is what the function gives."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline import memo as memo_module
from pipeline import warehouse
from pipeline.memo import Memo
from pipeline.transform.standardize import (
    CompanyName,
    customer_memos,
    split_company_name,
    standardize_customers,
)
from pipeline.validation.findings import customer_findings, phone_memo, uscc_memo
from tests.conftest import postgres_schema


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        engine = warehouse.create_engine(f"sqlite:///{tmp_path}/wh.db")
        warehouse.migrate(engine)
        yield engine
        return
    with postgres_schema() as scoped:
        warehouse.migrate(scoped)
        yield scoped


class Counted:
    """A function that counts its calls."""

    def __init__(self, function):
        self.function, self.calls = function, []

    def __call__(self, value):
        self.calls.append(value)
        return self.function(value)


AWKWARD = [
    "北京华创科技有限公司",
    None,
    "",
    "  spaced  ",
    "北京华创科技有限公司",  # a repeat is computed once
    "x" * (memo_module.MAX_VALUE_CHARS + 1),  # too long to store
    "nul\x00inside",  # PostgreSQL text cannot hold NUL
    "bad\udc80utf8",  # a lone surrogate: not UTF-8
    "'; DROP TABLE memo_values; --",
]


def _upper(value: str | None) -> str | None:
    return None if value is None else value.upper() or None


def test_a_memo_gives_the_function_result_and_remembers_it(engine):
    first = Counted(_upper)
    memo = Memo(engine, "upper", "v1", first)
    assert memo.map(AWKWARD) == [_upper(v) for v in AWKWARD]
    assert len(first.calls) == len(AWKWARD) - 1  # the repeat
    assert memo.save() == 4  # the storable text values, "" included (its result is None)

    again = Counted(_upper)
    remembered = Memo(engine, "upper", "v1", again)
    assert remembered.map(AWKWARD) == [_upper(v) for v in AWKWARD]
    # Only what could not be stored is computed again (None is never stored).
    assert sorted(again.calls, key=str) == sorted(
        [None, "x" * (memo_module.MAX_VALUE_CHARS + 1), "nul\x00inside", "bad\udc80utf8"],
        key=str,
    )
    assert remembered.save() == 0


def test_a_new_version_computes_again_and_drops_the_old_rows(engine):
    Memo(engine, "upper", "v1", _upper).map(["a", "b"])
    old = Memo(engine, "upper", "v1", _upper)
    old.map(["a", "b"])
    old.save()
    other_kind = Memo(engine, "lower", "v1", str.lower)
    other_kind.map(["A"])
    other_kind.save()

    calls = Counted(lambda v: f"new {v}")
    new = Memo(engine, "upper", "v2", calls)
    assert new.map(["a", "b"]) == ["new a", "new b"]
    assert calls.calls == ["a", "b"]
    new.save()
    rows = warehouse.read_query(
        engine, 'SELECT "kind", "version", "value" FROM memo_values ORDER BY 1, 2, 3'
    )
    assert rows.values.tolist() == [
        ["lower", "v1", "A"],
        ["upper", "v2", "a"],
        ["upper", "v2", "b"],
    ]


def _stored(engine) -> list[str]:
    return sorted(warehouse.read_query(engine, 'SELECT "value" FROM memo_values')["value"])


def test_values_runs_stop_using_are_dropped(engine, monkeypatch):
    monkeypatch.setattr(memo_module, "PRUNE_AT_LEAST", 0)
    first = Memo(engine, "upper", "v1", _upper)
    first.map(list("abcdefgh"))
    first.save()
    # A run leaving more than half of them unused rewrites the kind with what it used.
    fewer = Memo(engine, "upper", "v1", _upper)
    assert fewer.map(["a", "b", "z"]) == ["A", "B", "Z"]
    assert fewer.save() == 3
    assert _stored(engine) == ["a", "b", "z"]
    # A run using most of them only adds what is new.
    most = Memo(engine, "upper", "v1", _upper)
    most.map(["a", "b", "z", "y"])
    assert most.save() == 1
    assert _stored(engine) == ["a", "b", "y", "z"]
    assert Memo(engine, "upper", "v1", _upper).map(["z"]) == ["Z"]


def test_structured_results_round_trip(engine):
    names = ["北京华创科技有限公司", "华创科技（上海）分公司", "ACME Trading Co., Ltd.", None]
    memos = customer_memos(engine, "CN")
    first = memos["customer_name"].map(names)
    memos["customer_name"].save()
    loaded = customer_memos(engine, "CN")["customer_name"]
    assert loaded.map(names) == first == [split_company_name(n) for n in names]
    assert all(isinstance(n, CompanyName) for n in loaded.map(names))
    assert loaded.misses == 1  # None only


def test_a_memo_without_a_warehouse_lives_with_the_object():
    calls = Counted(_upper)
    memo = Memo(None, "upper", "v1", calls)
    assert memo.map(["a", "a", None]) == ["A", "A", None]
    assert calls.calls == ["a", None]
    assert memo.save() == 0


def _customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source_record_id": ["C1", "C2", "C3", "C4"],
            "customer_name": ["北京华创科技有限公司", "华创科技北京分公司", None, "ACME Co., Ltd."],
            "uscc": ["91110000600037341L", "91110000600037341X", None, "not a code"],
            "phone": ["+86 138 1234 5678", "010-8888 1234 转 12", "12345", None],
            "email": ["a@b.cn", None, "bad", "x@acme.com"],
            "address": ["广东省深圳市福田区世纪大道424号", None, "上海市浦东新区", "1 Main St"],
            "province": [None, "北京", None, None],
            "city": [None, None, None, None],
        }
    )


def test_standardizing_with_remembered_results_is_standardizing(engine):
    records = _customers()
    plain = standardize_customers(records, "CN")
    memos = customer_memos(engine, "CN")
    pd.testing.assert_frame_equal(standardize_customers(records, "CN", memos), plain)
    for memo in memos.values():
        memo.save()
    loaded = customer_memos(engine, "CN")
    pd.testing.assert_frame_equal(standardize_customers(records, "CN", loaded), plain)
    assert {name: m.misses for name, m in loaded.items()} == {
        "customer_name": 1,  # None is never stored
        "uscc": 1,
        "phone": 1,
        "address": 1,
    }


def test_findings_with_remembered_phone_and_uscc_checks_are_the_findings(engine):
    customers = _customers().assign(
        account_manager=["王芳", None, "李雷", "王芳"],
        industry=["制造业", None, "零售", "零售"],
        updated_at=pd.to_datetime(["2026-11-01", "2026-01-01", "2026-10-01", "2026-11-20"]),
        created_at=pd.to_datetime(["2020-01-01"] * 4),
    )
    contacts = pd.DataFrame(
        {
            "source_record_id": ["P1", "P2"],
            "customer_record_id": ["C1", "C2"],
            "is_key_person": [True, False],
            "mobile_phone": ["13812345678", "1381234"],
            "office_phone": [None, "021-80001234"],
            "email": ["p@b.cn", "bad@"],
        }
    )
    log_rows = pd.DataFrame(
        {"source_record_id": ["L1"], "customer_record_id": ["C1"], "summary": [None]}
    )
    args = (customers, contacts, log_rows, "2026Q4", pd.Timestamp("2026-11-23").to_pydatetime())
    plain = customer_findings(*args)
    memo, usccs = phone_memo(engine, "CN"), uscc_memo(engine)
    pd.testing.assert_frame_equal(customer_findings(*args, phones=memo, usccs=usccs), plain)
    memo.save()
    usccs.save()
    loaded, loaded_usccs = phone_memo(engine, "CN"), uscc_memo(engine)
    found = customer_findings(*args, phones=loaded, usccs=loaded_usccs)
    pd.testing.assert_frame_equal(found, plain)
    assert loaded.misses == 1  # the customers' missing phone
    assert loaded_usccs.misses == 1 and loaded_usccs.hits == 3  # None is never stored
    assert plain["finding"].eq("phone_invalid").any()
    # a wrong check digit and a non-code are invalid, a blank one is missing
    invalid = plain.loc[plain["finding"].eq("uscc_invalid"), "source_record_id"]
    assert sorted(invalid) == ["C2", "C4"]
    assert plain.loc[plain["finding"].eq("uscc_missing"), "source_record_id"].tolist() == ["C3"]


def test_the_phone_memo_is_computed_afresh_when_the_shared_landline_rule_changes(
    monkeypatch,
) -> None:
    # is_valid_phone uses standardize.unlisted_cn_landline: the memo's version covers both
    # modules' source, so a change in either one drops what was remembered.
    from pipeline.transform import standardize
    from pipeline.validation import findings

    before = phone_memo(None, "CN").version
    sources = {
        findings.__file__: b"# findings",
        standardize.__file__: b"# standardize, changed",
    }
    real_read = memo_module.Path.read_bytes
    monkeypatch.setattr(
        memo_module.Path,
        "read_bytes",
        lambda self: sources.get(str(self)) or real_read(self),
    )
    changed = phone_memo(None, "CN").version
    sources[standardize.__file__] = b"# standardize, changed again"
    assert len({before, changed, phone_memo(None, "CN").version}) == 3
