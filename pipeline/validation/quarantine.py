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
    values = raw.astype(object).where(raw.notna(), None)
    return [
        json.dumps({k: (None if v is None else str(v)) for k, v in row.items()}, ensure_ascii=False)
        for row in values.to_dict("records")
    ]


def split_rows(
    dataset: str,
    raw: pd.DataFrame,
    typed: pd.DataFrame,
    violations: pd.DataFrame,
    cast_errors: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(valid typed rows, quarantine rows); every raw row lands in exactly one of them.

    ``violations`` has one row per (row, broken rule) with columns row, code, reason in
    suite order; ``cast_errors`` adds the unreadable values' reasons to the row's reasons.
    """
    bad_rows = (
        pd.Index(violations["row"].unique()) if len(violations) else pd.Index([], dtype="int64")
    )
    valid = typed.loc[~typed.index.isin(bad_rows)].reset_index(drop=True)
    if not len(bad_rows):
        return valid, pd.DataFrame(columns=list(QUARANTINE_COLUMNS))
    per_row = violations.drop_duplicates(["row", "code", "reason"]).groupby("row", sort=False)
    codes = per_row["code"].agg(lambda c: list(dict.fromkeys(c)))
    reasons = per_row["reason"].agg(list)
    if len(cast_errors):
        cast_reasons = cast_errors.groupby("row")["reason"].agg(list)
        reasons = reasons.combine(
            cast_reasons.reindex(reasons.index), lambda a, b: a + (b if isinstance(b, list) else [])
        )
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
