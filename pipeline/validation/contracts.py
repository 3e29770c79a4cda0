"""Contracts on the tables that feed the reports (core_*, mart_*): stop the run, never drop rows.

Unlike the row-level source suites, a broken contract here is a bug upstream in our own
code: ``check_table`` raises :class:`ContractError` naming the table, the failing rules,
how many rows and example keys. Suites are ``expectations/<table>.yml``.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine

from pipeline import warehouse
from pipeline.stages import StageContext, StageResult
from pipeline.validation.checks import run_suite
from pipeline.validation.rules import build_suite, load_rules

log = logging.getLogger(__name__)

# table -> partition it is checked by ("quarter" = the run's quarter only)
CONTRACT_TABLES: dict[str, str | None] = {
    "core_customers": None,
    "core_customer_xref": None,
    "mart_customer_quarter": "quarter",
    "mart_metrics": "quarter",
}


class ContractError(RuntimeError):
    """A table that feeds the reports breaks its contract."""


def check_frame_contract(table: str, frame: pd.DataFrame) -> list[dict]:
    """Validate ``frame`` against ``expectations/<table>.yml``; raise ContractError on failure."""
    suite = build_suite(table, load_rules(table))
    violations, summary = run_suite(frame.reset_index(drop=True), suite, {})
    failing = [s for s in summary if not s["success"]]
    if failing:
        key = frame.columns[0]
        rows = violations["row"].drop_duplicates().head(5).tolist()
        examples = ", ".join(str(frame[key].iloc[r]) for r in rows if r < len(frame))
        rules = "; ".join(
            f"{s['rule_id']} ({s['reason']}): {s['unexpected_count']} rows" for s in failing
        )
        raise ContractError(
            f"table {table} breaks its contract ({len(frame)} rows): {rules}"
            + (f"; example {key}: {examples}" if examples else "")
        )
    return summary


def check_table(engine: Engine, table: str, **partition: Any) -> list[dict]:
    """Read ``table`` (or a partition) from the warehouse and check its contract."""
    return check_frame_contract(table, warehouse.read_table(engine, table, **partition))


def run_contracts(ctx: StageContext) -> StageResult:
    """Check every existing contract table (quarter tables for ``ctx.quarter``)."""
    checked: dict[str, int] = {}
    for table, partition in CONTRACT_TABLES.items():
        if not warehouse.table_exists(ctx.engine, table):
            log.warning("contract table %s does not exist yet: not checked", table)
            continue
        where = {partition: str(ctx.quarter)} if partition else {}
        frame = warehouse.read_table(ctx.engine, table, **where)
        check_frame_contract(table, frame)
        checked[table] = len(frame)
    rows = sum(checked.values())
    return StageResult(stage="check_contracts", rows_in=rows, rows_out=rows, detail=checked)
