"""Row-level rules: the suites in ``expectations/`` and the derived columns they check.

Grain: one row per raw row of a dataset (same index as the raw frame). The suites are
YAML (one per dataset) naming a Great Expectations 1.x expectation, its arguments, the
defect code and a readable reason; ``build_suite`` turns one into a GX suite.
Columns starting with ``_`` are derived here, vectorized, so GX only compares values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from pipeline.datasets import Dataset
from pipeline.settings import ValidationSettings

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite

SUITE_DIR = Path(__file__).resolve().parents[2] / "expectations"


def quiet_great_expectations() -> None:
    """GX logs its own set-up at INFO on every context; keep run logs about our data."""
    # Some GX modules pin their own logger to INFO, so the parent's level is not enough.
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("great_expectations")]:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Rule:
    """One expectation of a suite: the defect code a failing row gets and why."""

    code: str
    expectation: str
    kwargs: dict[str, Any]
    reason: str

    @property
    def rule_id(self) -> str:
        target = (
            self.kwargs.get("column")
            or f"{self.kwargs.get('column_A')}>={self.kwargs.get('column_B')}"
        )
        return f"{self.code}:{target}"


def load_rules(dataset: str, suite_dir: Path = SUITE_DIR) -> list[Rule]:
    """The rules of ``expectations/<dataset>.yml``."""
    path = suite_dir / f"{dataset}.yml"
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    if spec.get("dataset") != dataset:
        raise ValueError(
            f"{path}: suite is for dataset {spec.get('dataset')!r}, expected {dataset!r}"
        )
    return [
        Rule(r["code"], r["expectation"], dict(r["kwargs"]), r["reason"]) for r in spec["rules"]
    ]


def build_suite(dataset: str, rules: list[Rule]) -> ExpectationSuite:
    """A GX suite whose expectations carry their rule's code, id and reason in ``meta``."""
    quiet_great_expectations()
    import great_expectations as gx
    from great_expectations.core import ExpectationSuite

    expectations = []
    for rule in rules:
        cls = getattr(gx.expectations, rule.expectation)
        meta = {"code": rule.code, "rule_id": rule.rule_id, "reason": rule.reason}
        expectations.append(cls(**rule.kwargs, meta=meta))
    return ExpectationSuite(name=dataset, expectations=expectations)


def suite_parameters(settings: ValidationSettings, extracted_at: datetime) -> dict[str, Any]:
    """Run-time values of the suites' ``$PARAMETER`` placeholders (the plausible date window)."""
    return {
        "earliest_date": pd.Timestamp(settings.earliest_plausible_date),
        "latest_date": pd.Timestamp(extracted_at)
        + timedelta(days=settings.latest_plausible_days_ahead),
    }


def check_frame(
    typed: pd.DataFrame,
    cast_errors: pd.DataFrame,
    dataset: Dataset,
    parent_frames: dict[str, pd.DataFrame],
) -> pd.DataFrame:
    """The typed frame plus the derived columns the suites check (same index, input untouched).

    ``_first_copy``: False on the second and later rows with a key already seen (the
    earlier copy stays valid). ``_readable``: no cast error in the row.
    ``_known_<column>`` for each reference column: blank (``missing_required`` covers that)
    or a key of the parent dataset's raw rows. A key set is not handed to GX as a
    ``value_set`` because GX copies its configuration many times per expectation, which
    with tens of thousands of keys costs seconds.
    ``_invoice_date`` (payments): the invoice date of the referenced invoice.
    """
    frame = typed.copy()
    key = frame["source_record_id"]
    frame["_first_copy"] = ~(key.notna() & key.duplicated(keep="first"))
    frame["_readable"] = ~frame.index.isin(cast_errors["row"]) if len(cast_errors) else True
    for column, parent in dataset.parents.items():
        keys = parent_frames[parent]["source_record_id"]
        frame[f"_known_{column}"] = frame[column].isna() | frame[column].isin(keys)
    if dataset.name == "finance_payments" and "finance_invoices" in parent_frames:
        invoices = parent_frames["finance_invoices"]
        dates = invoices.drop_duplicates("source_record_id").set_index("source_record_id")[
            "invoice_date"
        ]
        frame["_invoice_date"] = frame["invoice_record_id"].map(dates).astype("datetime64[ns]")
    return frame
