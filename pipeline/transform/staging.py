"""Staging: type the raw text rows of one dataset (rename happened in extract; nothing else here).

Grain: one row in, one row out, same index. Every value that cannot be read as its
column's kind (pipeline/datasets.py) becomes missing in the typed frame and is listed
as a cast error, so validation can quarantine the row with a readable reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from pipeline.arrowtext import as_arrow_text, stripped
from pipeline.datasets import LINEAGE_COLUMNS, Dataset

log = logging.getLogger(__name__)

CAST_ERROR_COLUMNS = ("row", "column", "reason")
_TRUE = {"1", "true", "t", "yes", "y", "是"}
_FALSE = {"0", "false", "f", "no", "n", "否"}


def _other_text(value: Any) -> str | None:
    """``text_values`` of a value that is not a ``str``: missing kinds become None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and value != value:  # NaN
        return None
    text = str(value).strip()
    return text if text else None


def text_values(series: pd.Series) -> pd.Series:
    """Raw values as stripped text (object dtype), blanks and missing values as None."""
    values = series.to_numpy(dtype=object)
    text = _stripped_in_arrow(values)
    if text is None:  # not all text: a plain loop over the values
        text = np.array(
            [
                (s if (s := v.strip()) else None) if type(v) is str else _other_text(v)
                for v in values
            ],
            dtype=object,
        )
    return pd.Series(text, index=series.index, dtype=object)


def _stripped_in_arrow(values: np.ndarray) -> np.ndarray | None:
    """``text_values`` of an array of ``str`` and missing values, None for any other kind.

    Arrow finds the few values that stripping changes (or that are blank) in C; the
    others keep their ``str`` objects, so no string is copied. Typing spends most of its
    time here: about 3x faster than a Python loop.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    array = as_arrow_text(values)
    if array is None:
        return None
    text = stripped(array)
    change = pc.or_(pc.not_equal(text, array), pc.equal(text, ""))
    out = values.copy()
    out[array.is_null().to_numpy(zero_copy_only=False)] = None  # NaN, pd.NA, None
    changed = np.flatnonzero(pc.fill_null(change, False).to_numpy(zero_copy_only=False))
    if len(changed):
        fixed = text.take(pa.array(changed)).to_pylist()
        out[changed] = np.array([v or None for v in fixed], dtype=object)
    return out


def _map_unique(text: pd.Series, func: Callable[[str], Any]) -> pd.Series:
    """``func`` applied to each distinct present value once (None stays None), object dtype."""
    codes, uniques = pd.factorize(text.to_numpy(dtype=object), use_na_sentinel=True)
    mapped = np.array([func(v) for v in uniques] + [None], dtype=object)
    return pd.Series(mapped[codes], index=text.index, dtype=object)


def _numbers(text: pd.Series) -> pd.Series:
    """Numbers of the text; missing where it is not a number, or not a finite one ("inf",
    "1e400"): no amount or score is infinite."""
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    return numbers.where(np.isfinite(numbers))


_INT64_LIMIT = 2.0**63  # whole numbers at or beyond this do not fit the Int64 columns


# The times the typed columns (datetime64[ns]) hold, with a margin for time-zone shifts.
# pandas parses "9999-12-31" (a common "no end" date) or "0001-01-01" at a coarser unit;
# those values are unreadable here instead of stopping the stage at the cast to ns.
EARLIEST_TIME = pd.Timestamp("1678-01-01")
LATEST_TIME = pd.Timestamp("2262-01-01")


# A year or a month without its day ("2026", "2026-07", "2026/7"): pandas reads it as the
# first day, a date the source never gave.
_NO_DAY = r"\s*\d{4}(?:[-/.]\d{1,2})?\s*$"


def _iso_time(value: str, timezone: str = "UTC") -> pd.Timestamp | None:
    """One ISO 8601 value as a naive time in ``timezone`` (None if unreadable), whether or
    not the typed columns can hold it."""
    try:
        stamp = pd.to_datetime(value, format="ISO8601")
    except (ValueError, OverflowError):
        return None
    if stamp is pd.NaT:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert(timezone).tz_localize(None)
    return stamp


def _local_time(value: str, source_timezone: str) -> pd.Timestamp | None:
    """One ISO 8601 value as a naive time in ``source_timezone`` (None if unreadable or
    beyond the times the typed columns hold)."""
    stamp = _iso_time(value, source_timezone)
    return stamp if stamp is not None and EARLIEST_TIME <= stamp < LATEST_TIME else None


def _timestamps(text: pd.Series, source_timezone: str) -> pd.Series:
    """Naive times in ``source_timezone`` of ISO 8601 text, NaT where unreadable.

    A value with an offset ("+08:00", "Z") is an absolute time: it becomes the time zone's
    local time, so that it reads like the naive local values beside it.
    """
    try:
        parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
    except ValueError:  # offsets beside naive values, or different offsets: value by value
        local = _map_unique(text, lambda v: _local_time(v, source_timezone))
        parsed = pd.Series(pd.DatetimeIndex(local.tolist()), index=text.index)
    else:
        if getattr(parsed.dt, "tz", None) is not None:  # one offset throughout
            parsed = parsed.dt.tz_convert(source_timezone).dt.tz_localize(None)
    held = (parsed >= EARLIEST_TIME) & (parsed < LATEST_TIME)  # False for NaT
    # A year or a month alone is read as its first day; only those days are looked at again.
    first_days = parsed.dt.day.eq(1).to_numpy()
    if first_days.any():
        held &= ~text.where(first_days).str.match(_NO_DAY).fillna(False).astype(bool)
    return parsed.where(held).astype("datetime64[ns]")


def cast_column(
    text: pd.Series, kind: str, vocab: dict[str, str] | None, source_timezone: str
) -> tuple[pd.Series, pd.Series]:
    """One raw text column typed as ``kind``; returns (typed values, mask of unreadable values)."""
    present = text.notna()
    if kind == "text":
        return text, pd.Series(False, index=text.index)
    if kind == "int":
        numbers = _numbers(text)
        whole = numbers.notna() & (numbers == numbers.round()) & (numbers.abs() < _INT64_LIMIT)
        bad = present & ~whole
        return numbers.where(whole).astype("Int64"), bad
    if kind == "float":
        numbers = _numbers(text)
        return numbers, present & numbers.isna()
    if kind == "date":
        parsed = _timestamps(text, source_timezone).dt.normalize()
        return parsed, present & parsed.isna()
    if kind == "datetime":
        parsed = _timestamps(text, source_timezone)
        utc = parsed.dt.tz_localize(source_timezone, ambiguous="NaT", nonexistent="NaT")
        typed = utc.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
        return typed, present & typed.isna()
    if kind == "bool":
        flags = _map_unique(
            text, lambda v: True if v.lower() in _TRUE else False if v.lower() in _FALSE else None
        )
        typed = flags.astype("boolean")
        return typed, present & typed.isna()
    if kind == "vocab":
        mapping = dict(vocab or {})
        mapping.update({code: code for code in mapping.values()})  # already-translated codes pass
        typed = _map_unique(text, mapping.get)
        return typed, present & typed.isna()
    raise ValueError(f"unknown column kind {kind!r}")


def _describe(kind: str, value: str, vocab: dict[str, str] | None) -> str:
    if kind == "vocab":
        return f"{value!r} is not one of {', '.join(sorted(vocab or {}))}"
    if kind in ("date", "datetime") and re.match(_NO_DAY, value):
        return f"{value!r} names no day (a date is YYYY-MM-DD)"
    if kind in ("date", "datetime") and _beyond_held_times(value):
        return (
            f"{value!r} is outside the dates the warehouse holds "
            f"({EARLIEST_TIME:%Y-%m-%d} to {LATEST_TIME - pd.Timedelta(days=1):%Y-%m-%d})"
        )
    article = "an" if kind == "int" else "a"
    label = {
        "int": "integer",
        "float": "number",
        "date": "date (YYYY-MM-DD)",
        "datetime": "timestamp",
        "bool": "yes/no value",
    }[kind]
    return f"{value!r} is not {article} {label}"


def _beyond_held_times(value: str) -> bool:
    """True for a readable ISO 8601 time that the typed columns cannot hold."""
    stamp = _iso_time(value)
    return stamp is not None and not EARLIEST_TIME <= stamp < LATEST_TIME


def stage_frame(
    raw: pd.DataFrame, dataset: Dataset, source_timezone: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Type a raw frame of ``dataset``: (typed frame, cast errors with columns row, column, reason).

    The typed frame has the house columns then the lineage columns; ``datetime`` columns are
    converted from naive ``source_timezone`` local time to naive UTC. The input is not modified.
    """
    typed: dict[str, pd.Series] = {"source_record_id": text_values(raw["source_record_id"])}
    errors: list[pd.DataFrame] = []
    for column in dataset.columns:
        text = (
            text_values(raw[column.name])
            if column.name in raw.columns
            else pd.Series(None, index=raw.index, dtype=object)
        )
        values, bad = cast_column(text, column.kind, column.vocab, source_timezone)
        typed[column.name] = values
        if bad.any():
            bad_values = text[bad]
            reasons = [
                f"{column.name}: {_describe(column.kind, v, column.vocab)}" for v in bad_values
            ]
            errors.append(
                pd.DataFrame({"row": bad_values.index, "column": column.name, "reason": reasons})
            )
    for name in LINEAGE_COLUMNS:
        if name != "source_record_id" and name in raw.columns:
            typed[name] = raw[name]
    frame = pd.DataFrame(typed, index=raw.index)
    if "extracted_at" in frame.columns:  # one value per batch: parse each distinct value once
        codes, uniques = pd.factorize(frame["extracted_at"].to_numpy(dtype=object))
        parsed = pd.to_datetime(pd.Series(uniques, dtype=object), errors="coerce", format="mixed")
        frame["extracted_at"] = pd.Series(
            parsed.array.take(codes, allow_fill=True), index=frame.index
        )
    cast_errors = (
        pd.concat(errors, ignore_index=True)
        if errors
        else pd.DataFrame(columns=list(CAST_ERROR_COLUMNS))
    )
    return frame, cast_errors
