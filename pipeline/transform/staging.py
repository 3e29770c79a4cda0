"""Staging: type the raw text rows of one dataset (rename happened in extract; nothing else here).

Grain: one row in, one row out, same index. Every value that cannot be read as its
column's kind (pipeline/datasets.py) becomes missing in the typed frame and is listed
as a cast error, so validation can quarantine the row with a readable reason.
"""

from __future__ import annotations

import logging

import pandas as pd

from pipeline.datasets import LINEAGE_COLUMNS, Dataset

log = logging.getLogger(__name__)

CAST_ERROR_COLUMNS = ("row", "column", "reason")
_TRUE = {"1", "true", "t", "yes", "y", "是"}
_FALSE = {"0", "false", "f", "no", "n", "否"}


def _text(series: pd.Series) -> pd.Series:
    """Raw values as stripped text (object dtype), blanks as None."""
    values = series.astype(object)
    present = values.notna()
    text = pd.Series(None, index=series.index, dtype=object)
    text[present] = values[present].astype(str).str.strip().astype(object)
    return text.where(text.fillna("") != "", None)


def _numbers(text: pd.Series) -> pd.Series:
    return pd.to_numeric(text, errors="coerce").astype("float64")


def _timestamps(text: pd.Series) -> pd.Series:
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
    if getattr(parsed.dt, "tz", None) is not None:  # an offset in the text: already absolute
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.astype("datetime64[ns]")


def cast_column(
    text: pd.Series, kind: str, vocab: dict[str, str] | None, source_timezone: str
) -> tuple[pd.Series, pd.Series]:
    """One raw text column typed as ``kind``; returns (typed values, mask of unreadable values)."""
    present = text.notna()
    if kind == "text":
        return text, pd.Series(False, index=text.index)
    if kind == "int":
        numbers = _numbers(text)
        whole = numbers.notna() & (numbers == numbers.round())
        bad = present & ~whole
        return numbers.where(whole).astype("Int64"), bad
    if kind == "float":
        numbers = _numbers(text)
        return numbers, present & numbers.isna()
    if kind == "date":
        parsed = _timestamps(text).dt.normalize()
        return parsed, present & parsed.isna()
    if kind == "datetime":
        parsed = _timestamps(text)
        utc = parsed.dt.tz_localize(source_timezone, ambiguous="NaT", nonexistent="NaT")
        typed = utc.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
        return typed, present & typed.isna()
    if kind == "bool":
        lowered = text.map(lambda v: v if v is None else v.lower())
        typed = pd.Series(pd.NA, index=text.index, dtype="boolean")
        typed[lowered.isin(_TRUE)] = True
        typed[lowered.isin(_FALSE)] = False
        return typed, present & typed.isna()
    if kind == "vocab":
        mapping = dict(vocab or {})
        mapping.update({code: code for code in mapping.values()})  # already-translated codes pass
        typed = text.map(lambda v: mapping.get(v) if v is not None else None).astype(object)
        return typed, present & typed.isna()
    raise ValueError(f"unknown column kind {kind!r}")


def _describe(kind: str, value: str, vocab: dict[str, str] | None) -> str:
    if kind == "vocab":
        return f"{value!r} is not one of {', '.join(sorted(vocab or {}))}"
    article = "an" if kind == "int" else "a"
    label = {
        "int": "integer",
        "float": "number",
        "date": "date (YYYY-MM-DD)",
        "datetime": "timestamp",
        "bool": "yes/no value",
    }[kind]
    return f"{value!r} is not {article} {label}"


def stage_frame(
    raw: pd.DataFrame, dataset: Dataset, source_timezone: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Type a raw frame of ``dataset``: (typed frame, cast errors with columns row, column, reason).

    The typed frame has the house columns then the lineage columns; ``datetime`` columns are
    converted from naive ``source_timezone`` local time to naive UTC. The input is not modified.
    """
    typed: dict[str, pd.Series] = {"source_record_id": _text(raw["source_record_id"])}
    errors: list[pd.DataFrame] = []
    for column in dataset.columns:
        text = (
            _text(raw[column.name])
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
    if "extracted_at" in frame.columns:
        frame["extracted_at"] = pd.to_datetime(
            frame["extracted_at"], errors="coerce", format="mixed"
        )
    cast_errors = (
        pd.concat(errors, ignore_index=True)
        if errors
        else pd.DataFrame(columns=list(CAST_ERROR_COLUMNS))
    )
    return frame, cast_errors
