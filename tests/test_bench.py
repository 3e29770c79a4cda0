"""The bench's own measuring: a stage's peak memory is its own, and sources change as asked."""

from __future__ import annotations

import os
import sqlite3
import sys
from datetime import date
from pathlib import Path

from pipeline.bench import measure, mutate_sources
from pipeline.demo import generate_demo_sources


def test_peak_memory_is_the_child_s_own_not_the_parent_s(tmp_path: Path) -> None:
    """Linux carries a parent's resident size into its child's ru_maxrss over exec; the
    bench must report what the stage process itself used."""
    parent_ballast = bytearray(600 * 2**20)  # a big parent, as the bench is after comparisons
    child = "x = bytearray(120 * 2**20); import time; time.sleep(0.5)"
    seconds, peak_mib, code, cpu = measure(
        [sys.executable, "-c", child], dict(os.environ), tmp_path / "log"
    )
    assert code == 0 and seconds > 0 and cpu >= 0
    assert 120 <= peak_mib < 400
    del parent_ballast


def test_peak_memory_counts_the_stage_s_worker_processes(tmp_path: Path) -> None:
    """A stage that validates on worker processes holds their memory too."""
    script = (
        "import multiprocessing as mp, time\n"
        "def work():\n"
        "    x = bytearray(300 * 2**20); time.sleep(1.0)\n"
        "if __name__ == '__main__':\n"
        "    ps = [mp.get_context('spawn').Process(target=work) for _ in range(2)]\n"
        "    [p.start() for p in ps]; [p.join() for p in ps]\n"
    )
    (tmp_path / "stage.py").write_text(script)
    _, peak_mib, code, _ = measure(
        [sys.executable, str(tmp_path / "stage.py")], dict(os.environ), tmp_path / "log"
    )
    assert code == 0
    assert peak_mib >= 600  # two workers of 300 MiB at once; the parent alone is ~10 MiB


def test_mutate_sources_adds_and_changes_about_the_share_asked(tmp_path: Path) -> None:
    src = tmp_path / "src"
    manifest = generate_demo_sources(src, customers=150, seed=3, as_of=date(2026, 11, 23))
    with sqlite3.connect(src / "sales.db") as con:
        lines_before = con.execute("SELECT COUNT(*) FROM sales_order_line").fetchone()[0]
    touched = mutate_sources(src, share=0.02, seed=3)
    total = sum(manifest["row_counts"].values())
    assert 0.01 * total <= touched <= 0.03 * total
    with sqlite3.connect(src / "sales.db") as con:
        lines_after = con.execute("SELECT COUNT(*) FROM sales_order_line").fetchone()[0]
        new_keys = con.execute(
            "SELECT COUNT(*) FROM sales_order_line WHERE line_id LIKE '%-n3'"
        ).fetchone()[0]
    assert lines_after - lines_before == new_keys > 0


def test_whole_run_peak_sums_the_stages_that_run_together() -> None:
    from pipeline.bench import whole_run_peak

    stages = [
        {"stage": "extract_sales", "peak_rss_mb": 600.0},
        {"stage": "extract_service", "peak_rss_mb": 700.0},
        {"stage": "extract_finance", "peak_rss_mb": 650.0},
        {"stage": "validate", "peak_rss_mb": 1900.0},
        {"stage": "quality_findings", "peak_rss_mb": 700.0},
        {"stage": "compute_metrics", "peak_rss_mb": 2600.0},
        {"stage": "check_contracts", "peak_rss_mb": 500.0},
    ]
    assert whole_run_peak(stages) == 3300.0  # findings beside metrics
    assert whole_run_peak(stages[:4]) == 1950.0  # the three extracts together
