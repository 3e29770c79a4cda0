"""The ``validate`` stage: type raw rows, run the suites with Great Expectations, split.

For every dataset of pipeline.datasets.DATASETS: ``raw_<dataset>`` is typed
(pipeline.transform.staging), checked against ``expectations/<dataset>.yml``, and split
into ``stg_<dataset>`` (valid rows, whole table replaced) and ``quarantine`` (partition
dataset replaced). Rows in = valid + quarantined is asserted for every dataset. When a
dataset's quarantined share passes its threshold the run stops with
:class:`QuarantineThresholdError` and nothing is written for that dataset. Customer-file
findings go to ``dq_findings`` (partition quarter) and an HTML summary of the run, with
no personal data, to ``<out_dir>/validation/<batch_id>/index.html``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from pipeline import warehouse
from pipeline.datasets import DATASETS, Dataset
from pipeline.settings import ValidationSettings
from pipeline.stages import StageContext, StageResult
from pipeline.transform.staging import stage_frame
from pipeline.validation.checks import run_suite
from pipeline.validation.docs import write_docs
from pipeline.validation.findings import customer_findings
from pipeline.validation.quarantine import split_rows
from pipeline.validation.rules import build_suite, check_frame, load_rules, suite_parameters

log = logging.getLogger(__name__)

__all__ = ["DatasetOutcome", "QuarantineThresholdError", "run", "validate_dataset"]


class QuarantineThresholdError(RuntimeError):
    """A dataset's quarantined share passed its threshold, or its row count collapsed."""

    def __init__(self, message: str, datasets: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.datasets = datasets


@dataclass
class DatasetOutcome:
    """The result of validating one dataset (nothing written yet)."""

    dataset: str
    rows_in: int
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    typed: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)  # all rows, typed
    expectations: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def quarantined_share(self) -> float:
        return len(self.quarantine) / self.rows_in if self.rows_in else 0.0


def read_raw(engine: sa.engine.Engine, dataset: str) -> pd.DataFrame:
    """``raw_<dataset>`` exactly as landed (text values, not parsed), with a RangeIndex."""
    table = f"raw_{dataset}"
    if not warehouse.table_exists(engine, table):
        raise LookupError(
            f"warehouse table {table!r} does not exist yet: run the extract stage first"
        )
    with engine.connect() as conn:
        frame = pd.read_sql(
            sa.text(f'SELECT * FROM "{table}"'), conn, coerce_float=False, dtype=object
        )
    return frame.reset_index(drop=True)


def validate_dataset(
    dataset: Dataset,
    raw: pd.DataFrame,
    parents: dict[str, pd.DataFrame],
    settings: ValidationSettings,
    source_timezone: str,
    extracted_at,
) -> DatasetOutcome:
    """Type, check and split one raw dataset (pure apart from GX's in-memory context).

    ``parents`` maps each parent dataset of ``dataset`` to its typed frame (all raw rows);
    references are checked against the parents' raw keys.
    """
    started = time.perf_counter()
    typed, cast_errors = stage_frame(raw, dataset, source_timezone)
    frame = check_frame(typed, cast_errors, dataset, parents)
    params = suite_parameters(settings, extracted_at)
    violations, summary = run_suite(
        frame.reset_index(drop=True), build_suite(dataset.name, load_rules(dataset.name)), params
    )
    valid, quarantine = split_rows(dataset.name, raw, typed, violations, cast_errors)
    if len(valid) + len(quarantine) != len(raw):
        raise AssertionError(
            f"{dataset.name}: rows in {len(raw)} != valid {len(valid)} + quarantined {len(quarantine)}"
        )
    return DatasetOutcome(
        dataset=dataset.name,
        rows_in=len(raw),
        valid=valid,
        quarantine=quarantine,
        typed=typed,
        expectations=summary,
        seconds=time.perf_counter() - started,
    )


def threshold_error(outcome: DatasetOutcome, max_share: float) -> QuarantineThresholdError:
    failing = [e for e in outcome.expectations if e["unexpected_count"]]
    rules = ", ".join(
        f"{e['rule_id']} ({e['expectation']}): {e['unexpected_count']} rows" for e in failing
    )
    examples = ", ".join(str(v) for v in outcome.quarantine["source_record_id"].head(5))
    return QuarantineThresholdError(
        f"dataset {outcome.dataset}: {len(outcome.quarantine)} of {outcome.rows_in} rows "
        f"({outcome.quarantined_share:.1%}) failed validation, above the threshold {max_share:.1%}; "
        f"failing expectations: {rules}; example source_record_id: {examples}. "
        f"Nothing was written for {outcome.dataset}.",
        (outcome.dataset,),
    )


def previous_row_count(engine: sa.engine.Engine, dataset: Dataset) -> int | None:
    """Rows of the previous batch of ``dataset`` (staged + quarantined), None on the first run."""
    if not warehouse.table_exists(engine, dataset.staging_table):
        return None
    with engine.connect() as conn:
        count = conn.execute(
            sa.text(f'SELECT COUNT(*) FROM "{dataset.staging_table}"')
        ).scalar_one()
        if warehouse.table_exists(engine, "quarantine"):
            count += conn.execute(
                sa.text('SELECT COUNT(*) FROM "quarantine" WHERE "dataset" = :d'),
                {"d": dataset.name},
            ).scalar_one()
    return int(count)


def run(ctx: StageContext) -> StageResult:
    """Validate every dataset; write stg_*, quarantine, dq_findings and the HTML summary."""
    settings = ctx.settings.validation
    typed_cache: dict[str, pd.DataFrame] = {}
    outcomes: dict[str, DatasetOutcome] = {}
    errors: list[QuarantineThresholdError] = []
    for dataset in DATASETS.values():
        raw = read_raw(ctx.engine, dataset.name)
        parents = {}
        for parent in set(dataset.parents.values()):
            if parent not in typed_cache:
                typed_cache[parent] = stage_frame(
                    read_raw(ctx.engine, parent),
                    DATASETS[parent],
                    ctx.settings.sources.source_timezone,
                )[0]
            parents[parent] = typed_cache[parent]
        outcome = validate_dataset(
            dataset, raw, parents, settings, ctx.settings.sources.source_timezone, ctx.extracted_at
        )
        typed_cache[dataset.name] = outcome.typed  # parents come before children in DATASETS
        max_share = settings.max_quarantine_share.get(
            dataset.name, settings.default_max_quarantine_share
        )
        log.info(
            "validated %s: %s rows in, %s valid, %s quarantined (%.2f%%) in %.1fs",
            dataset.name,
            outcome.rows_in,
            len(outcome.valid),
            len(outcome.quarantine),
            100 * outcome.quarantined_share,
            outcome.seconds,
        )
        previous = previous_row_count(ctx.engine, dataset)
        error = None
        if outcome.quarantined_share > max_share:
            error = threshold_error(outcome, max_share)
        elif previous and outcome.rows_in < settings.min_row_count_ratio * previous:
            error = QuarantineThresholdError(
                f"dataset {dataset.name}: row count collapsed from {previous} in the previous batch "
                f"to {outcome.rows_in} (below {settings.min_row_count_ratio:.0%}); nothing was written "
                f"for {dataset.name}.",
                (dataset.name,),
            )
        if error is not None:
            log.error("%s", error)
            errors.append(error)
            outcomes[dataset.name] = outcome
            continue
        warehouse.replace_table(ctx.engine, dataset.staging_table, outcome.valid)
        warehouse.replace_partition(
            ctx.engine,
            "quarantine",
            outcome.quarantine.drop(columns=["dataset"]),
            dataset=dataset.name,
        )
        outcomes[dataset.name] = outcome

    findings = pd.DataFrame()
    blocked = {name for e in errors for name in e.datasets}
    if not blocked & {"sales_customers", "sales_contacts", "service_contact_log"}:
        findings = customer_findings(
            outcomes["sales_customers"].valid,
            outcomes["sales_contacts"].valid,
            outcomes["service_contact_log"].valid,
            quarter=str(ctx.quarter),
            as_of=ctx.extracted_at,
            stale_after_days=settings.stale_after_days,
            phone_region=settings.phone_region,
        )
        warehouse.replace_partition(
            ctx.engine, "dq_findings", findings.drop(columns=["quarter"]), quarter=str(ctx.quarter)
        )
    docs = write_docs(
        ctx.settings.out_dir / "validation" / ctx.batch_id,
        ctx.batch_id,
        str(ctx.quarter),
        outcomes,
        findings,
        errors,
    )
    if errors:
        raise QuarantineThresholdError("\n".join(str(e) for e in errors), tuple(sorted(blocked)))
    rows_in = sum(o.rows_in for o in outcomes.values())
    rows_valid = sum(len(o.valid) for o in outcomes.values())
    detail = {
        name: {
            "rows_in": o.rows_in,
            "valid": len(o.valid),
            "quarantined": len(o.quarantine),
            "seconds": round(o.seconds, 2),
        }
        for name, o in outcomes.items()
    }
    detail["findings"] = len(findings)
    detail["data_docs"] = str(docs)
    return StageResult(stage="validate", rows_in=rows_in, rows_out=rows_valid, detail=detail)
