"""Run a dataset's suite with Great Expectations and list the rows that break each rule.

Grain of ``violations``: one row per (raw row, broken rule).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.validation.rules import quiet_great_expectations

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite

log = logging.getLogger(__name__)

VIOLATION_COLUMNS = ("row", "code", "rule_id", "reason", "column")


def _context() -> Any:
    quiet_great_expectations()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # GX fingerprints every pandas batch under 1 GB (hashing every value) only to label it
    # in its results; we never read the label, and on order lines it cost about 1/8 of the
    # stage. Batches above the threshold are not fingerprinted, so the threshold goes to 0.
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def _checked_columns(suite: ExpectationSuite) -> list[str] | None:
    """The columns the suite's expectations read, in first-use order; None if one reads the table."""
    columns: list[str] = []
    for expectation in suite.expectations:
        kwargs = expectation.configuration.kwargs
        named = [kwargs[k] for k in ("column", "column_A", "column_B") if kwargs.get(k)]
        if not named:
            return None
        columns.extend(c for c in named if c not in columns)
    return columns


class SuiteRunner:
    """One dataset's suite, ready to validate frame after frame (e.g. the chunks of a dataset).

    The GX context, data source, asset and batch definition are made once; each frame is then
    validated as one batch, so GX's set-up cost is paid once per dataset, not once per chunk.
    """

    def __init__(self, suite: ExpectationSuite, parameters: dict[str, Any]) -> None:
        self.suite = suite
        self.parameters = parameters
        context = _context()
        asset = context.data_sources.add_pandas(f"crm_{suite.name}").add_dataframe_asset(suite.name)
        self._batches = asset.add_batch_definition_whole_dataframe("batch")
        self.columns = _checked_columns(suite)

    def run(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
        """Validate ``frame``: (violations, per-expectation summary).

        ``violations.row`` holds ``frame``'s index labels (any unique index), so a chunk's
        rows keep their numbers in the dataset. Raises RuntimeError when an expectation
        cannot be evaluated (a broken suite must not pass silently).
        """
        # Only the checked columns go to GX: it fingerprints (hashes) every batch it is
        # given, which on whole chunks cost more than evaluating the expectations.
        checked = frame if self.columns is None else frame[self.columns]
        batch = self._batches.get_batch(
            batch_parameters={"dataframe": checked.reset_index(drop=True)}
        )
        result = batch.validate(
            self.suite,
            result_format={"result_format": "COMPLETE"},
            expectation_parameters=self.parameters,
        )
        labels = frame.index.to_numpy()
        parts: list[pd.DataFrame] = []
        summary: list[dict] = []
        for outcome in result.results:
            meta = outcome.expectation_config.meta or {}
            if outcome.exception_info and outcome.exception_info.get("raised_exception"):
                raise RuntimeError(
                    f"suite {self.suite.name}: expectation {meta.get('rule_id')} could not run: "
                    f"{outcome.exception_info.get('exception_message')}"
                )
            rows = list(outcome.result.get("unexpected_index_list") or [])
            summary.append(
                {
                    "rule_id": meta.get("rule_id"),
                    "code": meta.get("code"),
                    "expectation": outcome.expectation_config.type,
                    "success": bool(outcome.success),
                    "unexpected_count": len(rows),
                    "reason": meta.get("reason"),
                }
            )
            if rows:
                parts.append(
                    pd.DataFrame(
                        {
                            "row": labels[rows],
                            "code": meta["code"],
                            "rule_id": meta["rule_id"],
                            "reason": meta["reason"],
                            "column": outcome.expectation_config.kwargs.get("column"),
                        }
                    )
                )
        violations = (
            pd.concat(parts, ignore_index=True)
            if parts
            else pd.DataFrame(columns=list(VIOLATION_COLUMNS))
        )
        return violations, summary


def run_suite(
    frame: pd.DataFrame, suite: ExpectationSuite, parameters: dict[str, Any]
) -> tuple[pd.DataFrame, list[dict]]:
    """Validate ``frame`` against ``suite`` once: (violations, per-expectation summary)."""
    return SuiteRunner(suite, parameters).run(frame)
