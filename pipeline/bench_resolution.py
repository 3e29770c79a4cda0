"""Benchmark customer resolution on demo sources against their ground truth.

``benchmark(source_dir)`` extracts the three customer tables straight from the demo
sources (no warehouse), resolves them and logs/prints pairwise precision, recall, F1,
records per second and peak memory.
"""

from __future__ import annotations

import logging
import resource
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

from pipeline.extract import finance, sales, service
from pipeline.resolution import combine_sources, resolve_customers
from pipeline.settings import Settings, SourceSettings

log = logging.getLogger(__name__)

CUSTOMER_DATASETS = {
    "sales_customers": "sales",
    "service_accounts": "service",
    "finance_accounts": "finance",
}


def staging_from_sources(source_dir: Path) -> dict[str, pd.DataFrame]:
    """The customer datasets of a demo source folder, typed like ``stg_*``; keyed by system."""
    source_dir = Path(source_dir)
    settings = Settings(
        sources=SourceSettings(
            sales_url=f"sqlite:///{source_dir / 'sales.db'}",
            service_url=f"sqlite:///{source_dir / 'service.db'}",
            finance_dir=source_dir / "finance",
        )
    )
    extracted_at = datetime(2026, 1, 1)
    frames: dict[str, list[pd.DataFrame]] = {}
    for adapter in (sales, service, finance):
        for dataset, chunk in adapter.extract(settings, "bench", extracted_at):
            if dataset in CUSTOMER_DATASETS:
                frames.setdefault(CUSTOMER_DATASETS[dataset], []).append(chunk)
    out = {}
    for system, chunks in frames.items():
        frame = pd.concat(chunks, ignore_index=True)
        for column in ("employee_count",):
            if column in frame:
                frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
        for column in ("annual_revenue_cny", "credit_limit_cny"):
            if column in frame:
                frame[column] = pd.to_numeric(frame[column], errors="coerce")
        for column in ("created_at", "updated_at"):
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], errors="coerce", format="mixed")
        out[system] = frame.drop_duplicates("source_record_id", keep="first")
    return out


def pairwise_scores(predicted: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Pairwise precision/recall/F1 of ``predicted (id, cluster)`` against ``truth (id, entity)``.

    Both frames have columns ``unique_id`` and ``label``; only ids present in both count.
    """
    joined = predicted.merge(truth, on="unique_id", suffixes=("_pred", "_true"))

    def same_pairs(column: str) -> int:
        sizes = joined.groupby(column).size()
        return int((sizes * (sizes - 1) // 2).sum())

    both = int(
        (lambda s: (s * (s - 1) // 2).sum())(joined.groupby(["label_pred", "label_true"]).size())
    )
    predicted_pairs = same_pairs("label_pred")
    true_pairs = same_pairs("label_true")
    precision = both / predicted_pairs if predicted_pairs else 1.0
    recall = both / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true_pairs": true_pairs,
        "predicted_pairs": predicted_pairs,
    }


def benchmark(source_dir: Path, settings: Settings | None = None) -> dict[str, float]:
    """Resolve a demo source folder and score it against ``truth/entities.csv``."""
    settings = settings or Settings()
    frames = staging_from_sources(source_dir)
    records = combine_sources(frames)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = resolve_customers(records, settings.resolution, None, None, "bench")
    seconds = time.perf_counter() - started
    # CPU seconds of this process (DuckDB threads included): wall time on a shared machine
    # also counts other people's work.
    cpu_seconds = time.process_time() - cpu_started
    truth = pd.read_csv(Path(source_dir) / "truth" / "entities.csv", dtype=str)
    truth = pd.DataFrame(
        {
            "unique_id": truth["source_system"] + ":" + truth["source_record_id"],
            "label": truth["entity_id"],
        }
    )
    predicted = result.xref.assign(
        unique_id=result.xref["source_system"] + ":" + result.xref["source_record_id"]
    )[["unique_id", "customer_id"]].rename(columns={"customer_id": "label"})
    scores = pairwise_scores(predicted, truth)
    scores.update(
        {
            "records": len(records),
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "records_per_second": len(records) / seconds if seconds else float("inf"),
            "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "review_pairs": len(result.review),
        }
    )
    # The benchmark command's output is this line, for people and for scripts.
    print(
        "precision={precision:.4f} recall={recall:.4f} f1={f1:.4f} records={records} "
        "seconds={seconds:.1f} cpu_seconds={cpu_seconds:.1f} records_per_second={records_per_second:.0f} "
        "peak_memory_mb={peak_memory_mb:.0f} review_pairs={review_pairs}".format(**scores)
    )
    return scores


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    benchmark(Path(sys.argv[1]))
