"""Staging: raw text typed per column kind, with a readable cast error per unreadable value."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.datasets import DATASETS
from pipeline.transform.staging import cast_column, stage_frame, text_values

TZ = "Asia/Shanghai"


def _text(*values: str | None) -> pd.Series:
    return pd.Series(list(values), dtype=object)


def test_int_column_reads_whole_numbers_and_rejects_text() -> None:
    typed, bad = cast_column(_text("4", "abc", None, "2.5"), "int", None, TZ)
    assert str(typed.dtype) == "Int64"
    assert typed.tolist()[0] == 4
    assert typed.isna().tolist() == [False, True, True, True]
    assert bad.tolist() == [False, True, False, True]


def test_datetime_is_converted_from_source_local_time_to_naive_utc() -> None:
    typed, bad = cast_column(_text("2026-07-01 08:30:00", "not a time"), "datetime", None, TZ)
    assert typed.iloc[0] == pd.Timestamp("2026-07-01 00:30:00")
    assert typed.dt.tz is None
    assert bad.tolist() == [False, True]


def test_times_with_an_offset_are_absolute_beside_local_times() -> None:
    # One value with an offset among naive ones stopped the whole validate stage ("Mixed
    # timezones detected"); a column with one offset throughout was shifted by the zone.
    mixed, bad = cast_column(
        _text("2026-07-01 10:00:00+08:00", "2026-07-01T02:00:00Z", "2026-07-01 10:00:00", "x"),
        "datetime",
        None,
        TZ,
    )
    assert mixed.tolist()[:3] == [pd.Timestamp("2026-07-01 02:00:00")] * 3
    assert bad.tolist() == [False, False, False, True]
    one_offset, _ = cast_column(_text("2026-07-01 10:00:00+08:00"), "datetime", None, TZ)
    assert one_offset.iloc[0] == pd.Timestamp("2026-07-01 02:00:00")
    dates, bad_dates = cast_column(
        _text("2026-06-30T20:00:00Z", "2026-07-01"), "date", None, TZ
    )  # 20:00 UTC is already July 1st in Shanghai
    assert dates.tolist() == [pd.Timestamp("2026-07-01")] * 2
    assert not bad_dates.any()


def test_date_stays_a_calendar_date_at_midnight() -> None:
    typed, bad = cast_column(_text("2026-02-28", "2026-02-30"), "date", None, TZ)
    assert typed.iloc[0] == pd.Timestamp("2026-02-28")
    assert bad.tolist() == [False, True]


def test_dates_beyond_the_warehouse_range_are_cast_errors_not_a_failed_stage() -> None:
    # "9999-12-31" (an export's "no end date") or "0001-01-01" stopped the whole validate
    # stage with OutOfBoundsDatetime, naming no dataset, row or column.
    for kind in ("date", "datetime"):
        typed, bad = cast_column(
            _text("9999-12-31", "0001-01-01 00:00:00", "2026-07-01", None), kind, None, TZ
        )
        assert str(typed.dtype) == "datetime64[ns]"
        assert typed.isna().tolist() == [True, True, False, True]
        assert bad.tolist() == [True, True, False, False]
    dataset = DATASETS["finance_invoices"]
    raw = pd.DataFrame(
        {
            "source_system": ["finance"],
            "source_record_id": ["I1"],
            "customer_record_id": ["F1"],
            "invoice_date": ["2026-07-01"],
            "due_date": ["9999-12-31"],
            "amount_cny": ["100"],
        }
    )
    _typed, errors = stage_frame(raw, dataset, TZ)
    assert errors["reason"].tolist() == [
        "due_date: '9999-12-31' is outside the dates the warehouse holds (1678-01-01 to 2261-12-31)"
    ]


def test_a_year_or_a_month_without_its_day_is_not_a_date() -> None:
    # pandas reads "2026" as 2026-01-01 and "2026-07" as 2026-07-01: days the source never
    # gave. Whole dates on the first of a month, and times, are read as before.
    values = (
        "2026",
        "2026-07",
        " 2026/7 ",
        "2026.07",
        "2026-07-01",
        "2026/7/1",
        "2026-07-01 08:00",
    )
    for kind in ("date", "datetime"):
        typed, bad = cast_column(_text(*values, None), kind, None, TZ)
        assert bad.tolist() == [True, True, True, True, False, False, False, False], kind
        assert typed.notna().tolist() == [False] * 4 + [True] * 3 + [False], kind
    raw = pd.DataFrame(
        {
            "source_system": ["finance"],
            "source_record_id": ["I1"],
            "customer_record_id": ["F1"],
            "invoice_date": ["2026-07"],
            "due_date": ["2026-08-01"],
            "amount_cny": ["100"],
        }
    )
    _typed, errors = stage_frame(raw, DATASETS["finance_invoices"], TZ)
    assert errors["reason"].tolist() == [
        "invoice_date: '2026-07' names no day (a date is YYYY-MM-DD)"
    ]


def test_vocab_maps_chinese_labels_and_flags_unknown_values() -> None:
    vocab = DATASETS["service_tickets"].columns[2].vocab
    typed, bad = cast_column(_text("电话", "phone", "传真", None), "vocab", vocab, TZ)
    assert typed.tolist()[:2] == ["phone", "phone"]
    assert bad.tolist() == [False, False, True, False]


def test_bool_and_float() -> None:
    flags, bad_flags = cast_column(_text("1", "0", "maybe"), "bool", None, TZ)
    assert flags.tolist()[:2] == [True, False] and bad_flags.tolist() == [False, False, True]
    amounts, bad_amounts = cast_column(_text("12.5", "-3", "12,5"), "float", None, TZ)
    assert amounts.tolist()[:2] == [12.5, -3.0] and bad_amounts.tolist() == [False, False, True]


def test_infinite_and_out_of_range_numbers_are_cast_errors_not_values() -> None:
    # "inf" staged as an amount, and one "inf" or "1e30" in a score column stopped the
    # whole validate stage ("cannot convert float infinity to integer").
    amounts, bad_amounts = cast_column(
        _text("inf", "-Infinity", "1e400", "NaN", "1.2e3"), "float", None, TZ
    )
    assert amounts.isna().tolist() == [True, True, True, True, False]
    assert bad_amounts.tolist() == [True, True, True, True, False]
    scores, bad_scores = cast_column(
        _text("inf", "1e30", "9223372036854775808", "5", "-0"), "int", None, TZ
    )
    assert str(scores.dtype) == "Int64"
    assert scores.tolist()[3:] == [5, 0]
    assert bad_scores.tolist() == [True, True, True, False, False]
    dataset = DATASETS["service_surveys"]
    raw = pd.DataFrame(
        {
            "source_system": ["service"],
            "source_record_id": ["SV1"],
            "ticket_record_id": [None],
            "customer_record_id": ["S1"],
            "answered_at": ["2026-07-01 10:00:00"],
            "csat_score": ["inf"],
            "nps_score": ["1e30"],
            "comment": [None],
        }
    )
    _typed, errors = stage_frame(raw, dataset, TZ)
    assert errors["reason"].tolist() == [
        "csat_score: 'inf' is not an integer",
        "nps_score: '1e30' is not an integer",
    ]


def test_stage_frame_reports_cast_errors_by_row_and_leaves_input_untouched() -> None:
    dataset = DATASETS["service_surveys"]
    raw = pd.DataFrame(
        {
            "source_system": ["service", "service"],
            "source_record_id": ["SV1", " SV2 "],
            "ticket_record_id": [None, "T1"],
            "customer_record_id": ["S1", "S1"],
            "answered_at": ["2026-07-01 10:00:00", "2026-07-02 10:00:00"],
            "csat_score": ["5", "abc"],
            "nps_score": ["9", "  "],
            "comment": ["好", None],
            "batch_id": ["b1", "b1"],
            "extracted_at": [pd.Timestamp("2026-11-23")] * 2,
        }
    )
    before = raw.copy()
    typed, errors = stage_frame(raw, dataset, TZ)
    pd.testing.assert_frame_equal(raw, before)
    assert typed["source_record_id"].tolist() == ["SV1", "SV2"]
    assert typed["answered_at"].iloc[0] == pd.Timestamp("2026-07-01 02:00:00")
    assert pd.isna(typed["nps_score"].iloc[1])  # blank is missing, not an error
    assert errors.to_dict("records") == [
        {"row": 1, "column": "csat_score", "reason": "csat_score: 'abc' is not an integer"}
    ]
    assert list(typed.columns[-3:]) == ["source_system", "batch_id", "extracted_at"]


# text_values: Arrow strips text columns, a Python loop anything else; both must give what
# str.strip() gives, for every kind of whitespace and missing value.
_WHITESPACE = [chr(c) for c in range(0x110000) if chr(c).isspace()]
_TEXT = st.text(alphabet=st.sampled_from([*_WHITESPACE, "\u200b", "\ufeff", "a", "客", "0", " "]))


def _strip_loop(values: list) -> list:
    out = []
    for v in values:
        if isinstance(v, str):
            out.append(v.strip() or None)
        elif v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v):
            out.append(None)
        else:
            out.append(str(v).strip() or None)
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            _TEXT,
            st.none(),
            st.just(float("nan")),
            st.just(pd.NA),
            st.sampled_from([5, 2.5, True, b"x ", pd.NaT]),
        ),
        max_size=12,
    )
)
def test_text_values_strips_like_python(values: list) -> None:
    series = pd.Series(np.array([*values, None], dtype=object)[:-1], dtype=object)
    assert list(text_values(series)) == _strip_loop(values)


def test_text_values_keeps_index_and_unchanged_objects() -> None:
    kept = "ACME 客户"
    series = pd.Series([kept, "  x ", "", None], index=[10, 11, 12, 13], dtype=object)
    out = text_values(series)
    assert list(out.index) == [10, 11, 12, 13] and out.dtype == object
    assert out[10] is kept and list(out) == [kept, "x", None, None]
