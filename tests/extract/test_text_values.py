"""Raw values become text the same way whether a column takes the vectorized path or not."""

from __future__ import annotations

import datetime
import math

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.extract.base import _as_text, _text_column, _text_value


def _one_by_one(series: pd.Series) -> list:
    return [_text_value(v) for v in series.to_numpy(dtype=object)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=30))
def test_floats_match_the_scalar_rule(values):
    series = pd.Series(values, dtype="float64")
    assert list(_text_column(series)) == _one_by_one(series)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=30))
def test_text_matches_the_scalar_rule(values):
    for dtype in (object, "str"):
        series = pd.Series(values, dtype=dtype)
        assert list(_text_column(series)) == _one_by_one(series)


def test_each_column_type():
    frame = pd.DataFrame(
        {
            "ints": pd.Series([1, -2, 3]),
            "bools": pd.Series([True, False, True]),
            "whole_reals": pd.Series([12.0, math.nan, 1e20]),
            "mixed": pd.Series([1, " ", datetime.datetime(2024, 5, 6, 7, 8, 9)], dtype=object),
            "stamps": pd.Series(
                pd.to_datetime(["2024-01-02 03:04:05", None, "2024-12-31 00:00:00"])
            ),
        }
    )
    text = _as_text(frame)
    assert text.to_dict("list") == {
        "ints": ["1", "-2", "3"],
        "bools": ["True", "False", "True"],
        "whole_reals": ["12", None, "100000000000000000000"],
        "mixed": ["1", None, "2024-05-06 07:08:09"],
        "stamps": ["2024-01-02 03:04:05", None, "2024-12-31 00:00:00"],
    }
    assert all(text[c].dtype == np.dtype(object) for c in text.columns)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(width=64)),
        max_size=30,
    )
)
def test_driver_values_match_the_scalar_rule(values):
    """A database driver hands over Python ints, floats and None in an object column."""
    series = pd.Series(np.array([*values, None], dtype=object)[:-1] if values else [], dtype=object)
    assert list(_text_column(series)) == _one_by_one(series)


_WHITESPACE = [chr(c) for c in range(0x110000) if chr(c).isspace()]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.just(math.nan),
            st.just(pd.NA),
            st.text(alphabet=st.sampled_from([*_WHITESPACE, "\u200b", "a", "客", " "]), max_size=4),
        ),
        max_size=30,
    )
)
def test_blank_and_missing_text_matches_the_scalar_rule(values):
    """Text columns are checked for blanks in Arrow: every kind of whitespace and of
    missing value must come out as the scalar rule gives it (text kept as it is)."""
    series = pd.Series(np.array([*values, None], dtype=object)[:-1] if values else [], dtype=object)
    out = _text_column(series)
    assert list(out) == _one_by_one(series)
    kept = [i for i, v in enumerate(values) if isinstance(v, str) and v.strip()]
    assert all(out[i] is values[i] for i in kept)  # no copies of the text
