"""Split a dataset into valid rows and quarantined rows (pure).

Grain of the quarantine frame: one row per quarantined raw row, with the whole raw row
as JSON, its lineage, every rule it broke (codes and readable reasons) and its primary
defect code (the first broken rule in suite order).
"""

from __future__ import annotations

import json

import pandas as pd

QUARANTINE_COLUMNS = (
    "dataset",
    "source_system",
    "source_record_id",
    "batch_id",
    "extracted_at",
    "defect",
    "defects",
    "reasons",
    "raw_row",
)


def _raw_json(raw: pd.DataFrame) -> list[str]:
    columns = list(raw.columns)
    missing = raw.isna().to_numpy()
    values = raw.to_numpy(dtype=object)
    return [
        json.dumps(
            {
                k: (None if gone else str(v))
                for k, v, gone in zip(columns, row, absent, strict=True)
            },
            ensure_ascii=False,
        )
        for row, absent in zip(values, missing, strict=True)
    ]


def split_rows(
    dataset: str,
    raw: pd.DataFrame,
    typed: pd.DataFrame,
    violations: pd.DataFrame,
    cast_errors: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid typed rows, quarantine rows); every raw row lands in exactly one of them.

    ``violations`` has one row per (row, broken rule) with columns row, code, reason (and
    the rule's column) in suite order; ``cast_errors`` adds the unreadable values' reasons
    to the row's reasons. A required value that is there but unreadable is not also called
    blank: its typed value is missing, but the cast error says what is wrong with it.
    Rows are labelled by ``raw``'s index (a chunk keeps its rows' numbers in the dataset).
    """
    bad_rows = (
        pd.Index(violations["row"].unique()) if len(violations) else pd.Index([], dtype="int64")
    )
    valid = typed.loc[~typed.index.isin(bad_rows)].reset_index(drop=True)
    if not len(bad_rows):
        return valid, pd.DataFrame(columns=list(QUARANTINE_COLUMNS))
    # A plain loop over the few (row, rule) pairs: far cheaper than a per-group groupby.
    codes: dict[int, list[str]] = {}
    reasons: dict[int, list[str]] = {}
    seen: set[tuple] = set()
    # (row, column) of the unreadable values, in rows that the invalid_value rule holds
    held = set(violations["row"][violations["code"] == "invalid_value"])
    unreadable = {
        (row, column)
        for row, column in zip(cast_errors["row"], cast_errors["column"], strict=True)
        if row in held
    }
    for row, code, reason, column in zip(
        violations["row"],
        violations["code"],
        violations["reason"],
        violations["column"],
        strict=True,
    ):
        if (row, code, reason) in seen:
            continue
        if code == "missing_required" and (row, column) in unreadable:
            continue  # not blank: unreadable, as the cast error says
        seen.add((row, code, reason))
        row_codes = codes.setdefault(row, [])
        if code not in row_codes:
            row_codes.append(code)
        reasons.setdefault(row, []).append(reason)
    for row, reason in zip(cast_errors["row"], cast_errors["reason"], strict=True):
        if row in reasons:
            reasons[row].append(reason)
    rows = sorted(bad_rows)
    bad_raw = raw.loc[rows]
    quarantine = pd.DataFrame(
        {
            "dataset": dataset,
            "source_system": bad_raw["source_system"].to_numpy(dtype=object),
            "source_record_id": bad_raw["source_record_id"].to_numpy(dtype=object),
            "batch_id": bad_raw["batch_id"].to_numpy(dtype=object),
            "extracted_at": pd.to_datetime(bad_raw["extracted_at"], format="mixed").to_numpy(),
            "defect": [codes[r][0] for r in rows],
            "defects": [",".join(codes[r]) for r in rows],
            "reasons": ["; ".join(reasons[r]) for r in rows],
            "raw_row": _raw_json(
                bad_raw.drop(columns=["batch_id", "extracted_at"], errors="ignore")
            ),
        }
    )
    return valid, quarantine
