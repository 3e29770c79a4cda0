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

import numpy as np
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


def orphan_rules(dataset: Dataset, suite_dir: Path = SUITE_DIR) -> dict[str, str]:
    """Reference column -> the code of the rule that quarantines every row of ``dataset``
    whose reference is not a key of the parent (``_known_<column>`` must be true, on all
    rows), for the columns whose suite has one."""
    found = {}
    for rule in load_rules(dataset.name, suite_dir):
        for column in dataset.parents:
            if (
                rule.expectation == "ExpectColumnValuesToBeInSet"
                and rule.kwargs.get("column") == f"_known_{column}"
                and rule.kwargs.get("value_set") == [True]
                and set(rule.kwargs) <= {"column", "value_set", "mostly"}
            ):
                found.setdefault(column, rule.code)
    return found


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


# Keys longer than this (in UTF-8 bytes) are kept beside the fixed-width array, in a dict:
# the array is as wide as its longest key, so one 1 MB key among millions would take
# terabytes (and the chunk being encoded as much again).
LONG_KEY_BYTES = 256


class KeyIndex:
    """The distinct record keys of a dataset seen so far, kept compact for chunked validation.

    Exact (no hashing), about 10-20 bytes per key: keys are UTF-8 bytes in one sorted
    fixed-width numpy array and are looked up by binary search; the rare key longer than
    ``LONG_KEY_BYTES`` is kept in a dict instead. With ``values`` it also keeps, per key, the
    value of the key's first row (e.g. an invoice's date). Blank keys are not kept: a blank
    never matches.
    """

    def __init__(self, with_values: bool = False) -> None:
        self.keys = np.array([], dtype="S1")
        self.values: np.ndarray | None = (
            np.array([], dtype="datetime64[ns]") if with_values else None
        )
        self.long: dict[bytes, np.datetime64 | None] = {}

    def __len__(self) -> int:
        return len(self.keys) + len(self.long)

    @staticmethod
    def _encode(keys: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[bytes]]:
        """(positions of the present keys of at most ``LONG_KEY_BYTES`` in ``keys``, their
        UTF-8 bytes, positions of the longer ones, their bytes); NUL never occurs in
        warehouse text."""
        at = np.flatnonzero(keys.notna().to_numpy())
        encoded = [k.encode("utf-8") for k in keys.to_numpy(dtype=object)[at]]
        long_at, long = np.array([], dtype=np.intp), []
        if encoded and max(map(len, encoded)) > LONG_KEY_BYTES:
            is_long = np.array([len(k) > LONG_KEY_BYTES for k in encoded])
            long = [k for k, too_long in zip(encoded, is_long, strict=True) if too_long]
            encoded = [k for k, too_long in zip(encoded, is_long, strict=True) if not too_long]
            long_at, at = at[is_long], at[~is_long]
        short = np.array(encoded, dtype=bytes) if encoded else np.array([], dtype="S1")
        return at, short, long_at, long

    def _positions(self, encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, position of each encoded key in ``self.keys``)."""
        common = np.promote_types(self.keys.dtype, encoded.dtype)
        keys = self.keys.astype(common, copy=False)
        encoded = encoded.astype(common, copy=False)
        positions = np.searchsorted(keys, encoded)
        clipped = np.minimum(positions, max(len(keys) - 1, 0))
        found = (positions < len(keys)) & (keys[clipped] == encoded) if len(keys) else positions < 0
        return found, clipped

    def contains(self, keys: pd.Series) -> np.ndarray:
        """Per value of ``keys``: is it a kept key (False for blanks)."""
        at, encoded, long_at, long = self._encode(keys)
        result = np.zeros(len(keys), dtype=bool)
        result[at] = self._positions(encoded)[0]
        result[long_at] = [key in self.long for key in long]
        return result

    def lookup(self, keys: pd.Series) -> pd.Series:
        """The value kept for each key (NaT for blanks and unknown keys), index of ``keys``."""
        if self.values is None:
            raise TypeError("this KeyIndex keeps no values")
        at, encoded, long_at, long = self._encode(keys)
        found, positions = self._positions(encoded)
        out = np.full(len(keys), np.datetime64("NaT"), dtype="datetime64[ns]")
        out[at[found]] = self.values[positions[found]]
        for i, key in zip(long_at, long, strict=True):
            if key in self.long:
                out[i] = self.long[key]
        return pd.Series(out, index=keys.index)

    def add(self, keys: pd.Series, values: pd.Series | None = None) -> None:
        """Keep the keys not kept yet; a repeated key keeps the value of its first row."""
        at, encoded, long_at, long = self._encode(keys)
        if self.values is not None and values is None and (len(encoded) or long):
            raise TypeError("this KeyIndex needs a value per key")
        given = None
        if self.values is not None and values is not None:
            given = values.to_numpy(dtype="datetime64[ns]")
        for i, key in zip(long_at, long, strict=True):
            self.long.setdefault(key, None if given is None else given[i])
        new = ~self._positions(encoded)[0]
        encoded = encoded[new]
        first = ~pd.Series(encoded).duplicated(keep="first").to_numpy()
        encoded = encoded[first]
        if not len(encoded):
            return
        order = np.argsort(encoded, kind="stable")
        encoded = encoded[order]
        common = np.promote_types(self.keys.dtype, encoded.dtype)
        self.keys = self.keys.astype(common, copy=False)
        at_sorted = np.searchsorted(self.keys, encoded.astype(common, copy=False))
        self.keys = np.insert(self.keys, at_sorted, encoded)
        if given is not None:
            kept = given[at][new][first][order]
            self.values = np.insert(self.values, at_sorted, kept)

    @classmethod
    def of(cls, keys: pd.Series, values: pd.Series | None = None) -> KeyIndex:
        index = cls(with_values=values is not None)
        index.add(keys, values)
        return index


# Values of a parent dataset that a child's rules compare with: parent -> column kept per key.
CARRIED_VALUES = {"finance_invoices": "invoice_date"}


def check_frame(
    typed: pd.DataFrame,
    cast_errors: pd.DataFrame,
    dataset: Dataset,
    parents: dict[str, KeyIndex],
    seen: KeyIndex | None = None,
) -> pd.DataFrame:
    """The typed frame plus the derived columns the suites check (same index, input untouched).

    Works on one chunk of a dataset at a time: ``seen`` holds the keys of the earlier chunks
    (updated here), ``parents`` the keys of every raw row of each parent dataset.
    ``_first_copy``: False on the second and later rows with a key already seen, in this
    chunk or an earlier one (the earlier copy stays valid). ``_readable``: no cast error in
    the row. ``_known_<column>`` for each reference column: blank (``missing_required``
    covers that) or a key of the parent dataset's raw rows. A key set is not handed to GX as
    a ``value_set`` because GX copies its configuration many times per expectation, which
    with tens of thousands of keys costs seconds.
    ``_invoice_date`` (payments): the invoice date of the referenced invoice (its first row).
    """
    frame = typed.copy()
    key = frame["source_record_id"]
    seen = seen if seen is not None else KeyIndex()
    repeated = key.duplicated(keep="first").to_numpy() | seen.contains(key)
    frame["_first_copy"] = ~(key.notna().to_numpy() & repeated)
    seen.add(key, typed[CARRIED_VALUES[dataset.name]] if seen.values is not None else None)
    frame["_readable"] = ~frame.index.isin(cast_errors["row"]) if len(cast_errors) else True
    for column, parent in dataset.parents.items():
        frame[f"_known_{column}"] = frame[column].isna().to_numpy() | parents[parent].contains(
            frame[column]
        )
    if dataset.name == "finance_payments" and "finance_invoices" in parents:
        frame["_invoice_date"] = parents["finance_invoices"].lookup(frame["invoice_record_id"])
    return frame
