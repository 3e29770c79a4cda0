"""``crm-pipeline bench``: stage timings and memory at several sizes, against the alternatives.

For each size the demo generator writes sources (timed on its own, not counted), then every
stage of the pipeline runs in its own process, as an Airflow task would, through
``python -m pipeline stage NAME``. For each stage the bench records wall seconds, the peak
resident memory of that process (``wait4``'s ``ru_maxrss``), its rows in and out (from
``run_log``) and rows per second. Then, on the same data:

* **load**: a large raw table written with ``DataFrame.to_sql`` defaults, with our
  ``warehouse.replace_table`` and, as the limit, a bare PostgreSQL ``COPY`` of prepared text;
* **resolution**: a naive matcher (every pair of records compared on name similarity, in
  DuckDB) against ours on the same sample, both scored on the generator's truth;
* **aggregation**: CSAT, NPS and 24 h SLA by value tier, region and industry with pandas,
  with DuckDB SQL and with SQL in the warehouse (results checked equal);
* **incremental ingest**: about 1% of source rows added or changed, then the ingest stages
  again, against the full ingest.

Optionally the same size with 4 and 8 quarters of history shows whether memory grows with
history. Results go to a JSON file and a table between markers in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipeline.quarters import Quarter

log = logging.getLogger(__name__)

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DOC_START = "<!-- bench:start -->"
DOC_END = "<!-- bench:end -->"


@dataclass
class StageRun:
    stage: str
    seconds: float
    peak_rss_mb: float
    rows_in: int | None = None
    rows_out: int | None = None
    returncode: int = 0
    cpu_seconds: float | None = None  # of the stage's process (the database server's not included)
    load_average: float | None = None  # 1-minute load when the stage ended

    @property
    def rows_per_second(self) -> float | None:
        if self.rows_in and self.seconds:
            return self.rows_in / self.seconds
        return None


@dataclass
class SizeResult:
    customers: int
    history_quarters: int
    quarter: str
    source_rows: dict[str, int]
    generate_seconds: float | None
    generate_peak_rss_mb: float | None
    stages: list[StageRun] = field(default_factory=list)
    wall_seconds: dict[str, float] = field(default_factory=dict)
    comparisons: dict[str, Any] = field(default_factory=dict)


def measure(
    argv: list[str], env: dict[str, str], log_path: Path
) -> tuple[float, float, int, float]:
    """Run ``argv``; return (wall seconds, peak RSS in MiB of the process, return code, CPU
    seconds). Output goes to ``log_path``. CPU seconds (user + system, all the process's
    threads) do not grow when other work shares the machine; wall seconds do."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        started = time.perf_counter()
        # cwd: the log's folder, so that no crm-pipeline.toml of the caller's cwd applies
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log_path.parent
        )
        # ru_maxrss of a child starts at the parent's size when it forked (Linux carries the
        # pre-exec high-water mark over), so the peak is the child's own VmHWM, polled.
        peak_kib = [0]
        reaped = threading.Event()
        poller = threading.Thread(
            target=_poll_hwm, args=(process.pid, argv, peak_kib, reaped), daemon=True
        )
        poller.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        reaped.set()
        poller.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    peak = peak_kib[0] if peak_kib[0] else usage.ru_maxrss
    return seconds, peak / 1024, process.returncode, usage.ru_utime + usage.ru_stime


def _status_kib(pid: int, field: str) -> int | None:
    """``field`` (e.g. VmRSS) of /proc/<pid>/status in KiB; None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None  # a zombie: no memory fields any more


def _descendants(pid: int) -> list[int]:
    """The live children, grandchildren, … of ``pid`` (e.g. a stage's worker processes)."""
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(k) for k in children.read_text().split()]
            except OSError:
                continue
            found += kids
            queue += kids
    return found


def _exec_done(pid: int, argv: list[str]) -> bool:
    """Has ``pid`` become ``argv`` (before its exec it is a copy of this process)?"""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1] == [
            os.fsencode(a) for a in argv
        ]
    except OSError:
        return False


def _poll_hwm(
    pid: int, argv: list[str], peak_kib: list[int], reaped: threading.Event, interval=0.05
) -> None:
    """Keep the stage's peak resident KiB until it is reaped: the larger of the process's
    own ``VmHWM`` and the largest sampled sum of resident memory over it and its
    descendants (worker processes count: they hold memory at the same time as the stage).

    Samples count from the child's exec on: before it, the child is a copy of the bench
    process, with its high-water mark. While it execs, its status has no memory fields;
    that once ended the polling, and the bench recorded 180 MiB (the bench process's own
    size) for a stage that peaks at 1.6 GiB."""
    while not reaped.is_set():
        own = _status_kib(pid, "VmHWM") if _exec_done(pid, argv) else None
        if own is not None:
            tree = (_status_kib(pid, "VmRSS") or 0) + sum(
                _status_kib(child, "VmRSS") or 0 for child in _descendants(pid)
            )
            peak_kib[0] = max(peak_kib[0], own, tree)
        reaped.wait(interval)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg()[0],
    }


class Bench:
    """One bench run: sizes × (generate, stages, comparisons)."""

    def __init__(
        self,
        workdir: Path,
        warehouse: str = "postgres",
        pg_url: str = DEFAULT_PG,
        as_of: date | None = None,
        seed: int = 42,
        as_dags: bool = True,
    ) -> None:
        self.as_dags = as_dags  # stages side by side where the DAGs run them
        self.workdir = Path(workdir)
        self.warehouse = warehouse
        self.pg_url = pg_url
        self.as_of = as_of or date.today()
        self.quarter = Quarter.last_complete(self.as_of)
        self.seed = seed

    # -- plumbing -------------------------------------------------------------------------
    def _dir(self, customers: int, history: int) -> Path:
        return self.workdir / f"c{customers}_h{history}"

    def warehouse_url(self, customers: int, history: int) -> str:
        if self.warehouse == "sqlite":
            return f"sqlite:///{self._dir(customers, history) / 'warehouse.db'}"
        schema = f"bench_c{customers}_h{history}"
        return f"{self.pg_url}?options=-csearch_path%3D{schema}"

    def _reset_warehouse(self, customers: int, history: int) -> None:
        if self.warehouse == "sqlite":
            (self._dir(customers, history) / "warehouse.db").unlink(missing_ok=True)
            return
        schema = f"bench_c{customers}_h{history}"
        engine = sa.create_engine(self.pg_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        engine.dispose()

    def env(self, customers: int, history: int, incremental: bool = False) -> dict[str, str]:
        root = self._dir(customers, history)
        src = root / "src"
        env = dict(os.environ)
        env.update(
            CRM_WAREHOUSE_URL=self.warehouse_url(customers, history),
            CRM_OUT_DIR=str(root / "out"),
            CRM_SOURCES__SALES_URL=f"sqlite:///{src / 'sales.db'}",
            CRM_SOURCES__SERVICE_URL=f"sqlite:///{src / 'service.db'}",
            CRM_SOURCES__FINANCE_DIR=str(src / "finance"),
            CRM_SOURCES__INCREMENTAL="true" if incremental else "false",
        )
        return env

    def migrate(self, customers: int, history: int) -> None:
        """``crm-pipeline migrate`` on the size's warehouse, as a deployment runs it."""
        argv = [sys.executable, "-m", "pipeline", "migrate"]
        root = self._dir(customers, history)
        code = measure(argv, self.env(customers, history), root / "stages.log")[2]
        if code != 0:
            raise RuntimeError(
                f"bench: crm-pipeline migrate failed at {customers} customers (exit {code}); "
                f"see {root / 'stages.log'}"
            )

    def stage(
        self, customers: int, history: int, name: str, batch: str, incremental: bool = False
    ) -> StageRun:
        argv = [sys.executable, "-m", "pipeline", "stage", name, "-q", str(self.quarter)]
        argv += ["--batch-id", batch]
        root = self._dir(customers, history)
        env = self.env(customers, history, incremental)
        seconds, rss, code, cpu = measure(argv, env, root / "stages.log")
        run = StageRun(name, round(seconds, 2), round(rss, 1), returncode=code)
        run.cpu_seconds = round(cpu, 2)
        run.load_average = round(os.getloadavg()[0], 2)
        if code != 0:
            raise RuntimeError(
                f"bench: stage {name} failed at {customers} customers (exit {code}); "
                f"see {root / 'stages.log'}"
            )
        engine = sa.create_engine(self.warehouse_url(customers, history))
        try:
            with engine.connect() as conn:
                row = conn.execute(
                    sa.text("SELECT rows_in, rows_out FROM run_log WHERE batch_id=:b AND stage=:s"),
                    {"b": batch, "s": name},
                ).first()
            if row is not None:
                run.rows_in, run.rows_out = row
        finally:
            engine.dispose()
        log.info(
            "%s customers, %s: %.1f s, %.0f MiB, %s rows in",
            customers,
            name,
            run.seconds,
            run.peak_rss_mb,
            run.rows_in,
        )
        return run

    # -- one size ------------------------------------------------------------------------
    def generate(self, customers: int, history: int, reuse: bool = False) -> SizeResult:
        root = self._dir(customers, history)
        manifest_path = root / "src" / "truth" / "manifest.json"
        if reuse and manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            same = (
                manifest.get("customers") == customers
                and manifest.get("as_of") == self.as_of.isoformat()
                and manifest.get("seed") == self.seed
                and manifest.get("history_start") == _history_start(self.as_of, history)
                and not (root / "src" / "mutated").exists()
            )
            if same:
                log.info("bench: reusing the sources in %s", root / "src")
                return SizeResult(
                    customers=customers,
                    history_quarters=history,
                    quarter=str(self.quarter),
                    source_rows=dict(manifest.get("row_counts", {})),
                    generate_seconds=None,
                    generate_peak_rss_mb=None,
                )
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        argv = [
            sys.executable,
            "-m",
            "pipeline",
            "demo-data",
            "--out",
            str(root / "src"),
            "--customers",
            str(customers),
            "--seed",
            str(self.seed),
            "--as-of",
            self.as_of.isoformat(),
            "--history-quarters",
            str(history),
        ]
        seconds, rss, code, _ = measure(argv, self.env(customers, history), root / "generate.log")
        if code != 0:
            raise RuntimeError(f"bench: demo-data failed; see {root / 'generate.log'}")
        manifest = json.loads(
            (root / "src" / "truth" / "manifest.json").read_text(encoding="utf-8")
        )
        return SizeResult(
            customers=customers,
            history_quarters=history,
            quarter=str(self.quarter),
            source_rows=dict(manifest.get("row_counts", {})),
            generate_seconds=round(seconds, 1),
            generate_peak_rss_mb=round(rss, 1),
        )

    def full_run(self, result: SizeResult) -> None:

        self._reset_warehouse(result.customers, result.history_quarters)
        started = time.perf_counter()
        result.stages += self.ingest(result, "bench-full")
        result.wall_seconds["ingest"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        result.stages += self.quarterly(result, "bench-full")
        result.wall_seconds["quarterly"] = round(time.perf_counter() - started, 1)
        result.wall_seconds["whole_run"] = round(
            result.wall_seconds["ingest"] + result.wall_seconds["quarterly"], 1
        )

    def ingest(self, result: SizeResult, batch: str, incremental: bool = False) -> list[StageRun]:
        """The ingest stages as the ingest DAG runs them: the three extracts side by side
        (``as_dags``), then the rest in order."""
        from concurrent.futures import ThreadPoolExecutor

        from pipeline.runner import INGEST_STAGES

        extracts = [n for n in INGEST_STAGES if n.startswith("extract_")]
        rest = [n for n in INGEST_STAGES if n not in extracts]
        c, h = result.customers, result.history_quarters
        if self.as_dags:
            # The schema first, as a deployment has it (`crm-pipeline migrate`); its seconds
            # count in the ingest's wall time. Then the three extracts side by side.
            self.migrate(c, h)
            with ThreadPoolExecutor(len(extracts)) as pool:
                runs = list(pool.map(lambda n: self.stage(c, h, n, batch, incremental), extracts))
        else:
            runs = [self.stage(c, h, n, batch, incremental) for n in extracts]
        return runs + [self.stage(c, h, n, batch, incremental) for n in rest]

    def quarterly(self, result: SizeResult, batch: str) -> list[StageRun]:
        """The quarterly stages as the quarterly DAG runs them: ``quality_findings`` beside
        ``compute_metrics`` then ``check_contracts``; the rest after both."""
        from concurrent.futures import ThreadPoolExecutor

        from pipeline.runner import QUARTERLY_STAGES

        c, h = result.customers, result.history_quarters
        beside = "quality_findings"
        if not self.as_dags or beside not in QUARTERLY_STAGES:
            return [self.stage(c, h, n, batch) for n in QUARTERLY_STAGES]
        chain = ["compute_metrics", "check_contracts"]
        rest = [n for n in QUARTERLY_STAGES if n not in (beside, *chain)]
        with ThreadPoolExecutor(1) as pool:
            aside = pool.submit(self.stage, c, h, beside, batch)
            runs = [self.stage(c, h, n, batch) for n in chain]
            runs.insert(0, aside.result())
        return runs + [self.stage(c, h, n, batch) for n in rest]

    def incremental(self, result: SizeResult, share: float = 0.01) -> None:

        src = self._dir(result.customers, result.history_quarters) / "src"
        (src / "mutated").touch()  # these sources are no longer the generator's
        changed = mutate_sources(src, share, seed=self.seed)
        started = time.perf_counter()
        runs = self.ingest(result, "bench-incremental", incremental=True)  # only what changed
        seconds = time.perf_counter() - started
        full_seconds = result.wall_seconds["ingest"]
        whole = result.wall_seconds.get("whole_run")
        result.comparisons["incremental_ingest"] = {
            "rows_added_or_changed": changed,
            "share_of_source_rows": round(changed / max(sum(result.source_rows.values()), 1), 4),
            "stages": [asdict(r) for r in runs],
            "seconds": round(seconds, 1),
            "cpu_seconds": round(sum(r.cpu_seconds or 0 for r in runs), 1),
            "full_ingest_seconds": round(full_seconds, 1),
            "ratio_to_full_ingest": round(seconds / full_seconds, 3) if full_seconds else None,
            "whole_run_seconds": whole,
            "ratio_to_whole_run": round(seconds / whole, 3) if whole else None,
            "peak_rss_mb": max(r.peak_rss_mb for r in runs),
        }

    # -- comparisons (in this process, on the warehouse the stages filled) ----------------
    def compare_load(self, result: SizeResult, max_rows: int = 1_000_000) -> None:
        from pipeline import warehouse

        url = self.warehouse_url(result.customers, result.history_quarters)
        engine = warehouse.create_engine(url)
        with engine.connect() as conn:
            frame = pd.read_sql(
                sa.text(f'SELECT * FROM "raw_sales_order_lines" LIMIT {int(max_rows)}'),
                conn,
                dtype=object,
            )
        rows = len(frame)
        out: dict[str, Any] = {"table": "raw_sales_order_lines", "rows": rows}
        started = time.perf_counter()
        frame.to_sql("bench_load_to_sql", engine, if_exists="replace", index=False)
        out["to_sql_seconds"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        warehouse.replace_table(engine, "bench_load_ours", frame)
        out["ours_seconds"] = round(time.perf_counter() - started, 2)
        if engine.dialect.name == "postgresql":
            out["copy_seconds"] = round(_bare_copy(engine, frame), 2)
        with engine.begin() as conn:
            for table in ("bench_load_to_sql", "bench_load_ours", "bench_load_copy"):
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
        engine.dispose()
        for key in ("to_sql", "ours", "copy"):
            if f"{key}_seconds" in out:
                out[f"{key}_rows_per_second"] = round(rows / max(out[f"{key}_seconds"], 1e-9))
        out["ours_vs_to_sql"] = round(out["to_sql_seconds"] / max(out["ours_seconds"], 1e-9), 1)
        result.comparisons["load"] = out

    def compare_resolution(self, result: SizeResult, sample: int = 4000) -> None:
        from pipeline.settings import Settings

        src = self._dir(result.customers, result.history_quarters) / "src"
        result.comparisons["resolution"] = compare_matchers(src, Settings(), sample, self.seed)

    def compare_aggregation(self, result: SizeResult) -> None:
        url = self.warehouse_url(result.customers, result.history_quarters)
        result.comparisons["aggregation"] = compare_aggregations(url, self.quarter)


def _bare_copy(engine: sa.Engine, frame: pd.DataFrame) -> float:
    """Seconds to COPY ``frame`` (already rendered as text) into a fresh table: the limit."""
    import io

    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False)
    data = buffer.getvalue()
    columns = ", ".join(f'"{c}" text' for c in frame.columns)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("DROP TABLE IF EXISTS bench_load_copy")
        cursor.execute(f"CREATE TABLE bench_load_copy ({columns})")
        started = time.perf_counter()
        with cursor.copy("COPY bench_load_copy FROM STDIN (FORMAT csv)") as copy:
            copy.write(data)
        raw.commit()
        return time.perf_counter() - started
    finally:
        raw.close()


def _history_start(as_of: date, history: int) -> str:
    from pipeline.demo.timeline import build_timeline

    return build_timeline(as_of, history).start.isoformat()


# -- resolution: naive pairwise vs ours ----------------------------------------------------
def compare_matchers(source_dir: Path, settings, sample: int, seed: int) -> dict[str, Any]:
    """Both matchers on the same random sample of source customer records, scored on truth."""
    import duckdb

    from pipeline.bench_resolution import pairwise_scores, staging_from_sources
    from pipeline.resolution import combine_sources, resolve_customers

    records = combine_sources(staging_from_sources(source_dir))
    all_records = len(records)
    truth = pd.read_csv(Path(source_dir) / "truth" / "entities.csv", dtype=str)
    truth = pd.DataFrame(
        {
            "unique_id": truth["source_system"] + ":" + truth["source_record_id"],
            "label": truth["entity_id"],
        }
    )
    # Sample whole true entities, so that the sample keeps its duplicates.
    entities = truth["label"].drop_duplicates()
    rng = np.random.default_rng(seed)
    uid = records["source_system"] + ":" + records["source_record_id"]
    per_entity = max(len(records) / max(len(entities), 1), 1.0)
    chosen = set(
        rng.choice(
            entities.to_numpy(), min(len(entities), int(sample / per_entity) + 1), replace=False
        )
    )
    keep = uid.map(truth.set_index("unique_id")["label"]).isin(chosen)
    records = records[keep.to_numpy()].reset_index(drop=True)
    uid = records["source_system"] + ":" + records["source_record_id"]
    out: dict[str, Any] = {"records": len(records)}

    started = time.perf_counter()
    result = resolve_customers(records, settings.resolution, None, None, "bench")
    ours_seconds = time.perf_counter() - started
    predicted = result.xref.assign(
        unique_id=result.xref["source_system"] + ":" + result.xref["source_record_id"]
    )[["unique_id", "customer_id"]].rename(columns={"customer_id": "label"})
    out["ours"] = {"seconds": round(ours_seconds, 2), **_rounded(pairwise_scores(predicted, truth))}

    # The naive matcher: every pair, Jaro-Winkler on the trimmed name, one threshold.
    names = pd.DataFrame({"uid": uid, "name": records["customer_name"].fillna("").str.strip()})
    started = time.perf_counter()
    con = duckdb.connect()
    con.register("r", names)
    pairs = con.execute(
        "SELECT a.uid AS l, b.uid AS r FROM r a JOIN r b ON a.uid < b.uid "
        "WHERE jaro_winkler_similarity(a.name, b.name) >= 0.92"
    ).df()
    con.close()
    labels = _connected_components(uid.tolist(), pairs)
    naive_seconds = time.perf_counter() - started
    naive = pd.DataFrame({"unique_id": uid, "label": labels})
    out["naive"] = {
        "seconds": round(naive_seconds, 2),
        "pairs_compared": len(records) * (len(records) - 1) // 2,
        **_rounded(pairwise_scores(naive, truth)),
    }
    # all pairs grow with the square of the records
    out["all_records"] = all_records
    out["naive_seconds_extrapolated_to_all_records"] = round(
        naive_seconds * (all_records / max(len(records), 1)) ** 2, 1
    )
    return out


def _rounded(scores: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}


def _connected_components(ids: list[str], pairs: pd.DataFrame) -> list[int]:
    parent = list(range(len(ids)))
    index = {v: i for i, v in enumerate(ids)}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for left, right in zip(pairs["l"], pairs["r"], strict=True):
        a, b = find(index[left]), find(index[right])
        if a != b:
            parent[a] = b
    return [find(i) for i in range(len(ids))]


# -- aggregation: pandas vs DuckDB vs the warehouse's SQL -----------------------------------
_AGG_SQL = """
SELECT c.value_tier, c.region, c.industry,
  AVG(CASE WHEN v.csat_score >= 4 THEN 1.0 ELSE 0.0 END) AS csat,
  100.0 * (AVG(CASE WHEN v.nps_score >= 9 THEN 1.0 ELSE 0.0 END)
         - AVG(CASE WHEN v.nps_score <= 6 THEN 1.0 ELSE 0.0 END)) AS nps,
  COUNT(*) AS surveys
FROM stg_service_surveys v JOIN seg c ON c.record_id = v.customer_record_id
WHERE v.answered_at >= :start AND v.answered_at < :end
  AND v.csat_score IS NOT NULL AND v.nps_score IS NOT NULL
GROUP BY c.value_tier, c.region, c.industry
"""


def compare_aggregations(url: str, quarter: Quarter) -> dict[str, Any]:
    """CSAT and NPS by tier × region × industry for the quarter, three ways, same answer."""
    import duckdb

    from pipeline import warehouse

    engine = warehouse.create_engine(url)
    start, end = quarter.start_date, quarter.end_date + pd.Timedelta(days=1)
    seg_sql = (
        "SELECT x.source_record_id AS record_id, COALESCE(q.value_tier, 'unknown') AS value_tier, "
        "COALESCE(q.region, 'unknown') AS region, COALESCE(q.industry, 'unknown') AS industry "
        "FROM core_customer_xref x JOIN mart_customer_quarter q ON q.customer_id = x.customer_id "
        "WHERE x.source_system = 'service' AND q.quarter = :q"
    )
    out: dict[str, Any] = {"quarter": str(quarter)}
    with engine.connect() as conn:
        started = time.perf_counter()
        seg = pd.read_sql(sa.text(seg_sql), conn, params={"q": str(quarter)})
        surveys = pd.read_sql(
            sa.text(
                "SELECT customer_record_id, answered_at, csat_score, nps_score "
                "FROM stg_service_surveys"
            ),
            conn,
        )
        read_seconds = time.perf_counter() - started
    surveys["answered_at"] = pd.to_datetime(surveys["answered_at"])
    surveys = surveys.dropna(subset=["csat_score", "nps_score"])
    started = time.perf_counter()
    s = surveys[
        (surveys["answered_at"] >= pd.Timestamp(start))
        & (surveys["answered_at"] < pd.Timestamp(end))
    ].merge(seg, left_on="customer_record_id", right_on="record_id")
    by_pandas = (
        s.assign(
            csat=(s["csat_score"] >= 4).astype(float),
            promoter=(s["nps_score"] >= 9).astype(float),
            detractor=(s["nps_score"] <= 6).astype(float),
        )
        .groupby(["value_tier", "region", "industry"])
        .agg(
            csat=("csat", "mean"),
            p=("promoter", "mean"),
            d=("detractor", "mean"),
            surveys=("csat", "size"),
        )
    )
    by_pandas["nps"] = 100 * (by_pandas["p"] - by_pandas["d"])
    pandas_seconds = time.perf_counter() - started
    out["pandas_seconds"] = round(pandas_seconds, 3)
    out["pandas_read_seconds"] = round(read_seconds, 3)

    con = duckdb.connect()
    con.register("seg", seg)
    con.register("stg_service_surveys", surveys)
    started = time.perf_counter()
    duck_sql = _AGG_SQL.replace(":start", "$start").replace(":end", "$end")
    by_duck = con.execute(duck_sql, {"start": pd.Timestamp(start), "end": pd.Timestamp(end)}).df()
    out["duckdb_seconds"] = round(time.perf_counter() - started, 3)
    con.close()

    # In the warehouse: the segment table is a temporary table there, surveys never leave it.
    with engine.begin() as conn:
        started = time.perf_counter()
        conn.execute(sa.text("DROP TABLE IF EXISTS seg"))
        conn.execute(sa.text(f"CREATE TEMPORARY TABLE seg AS {seg_sql}"), {"q": str(quarter)})
        by_sql = pd.read_sql(
            sa.text(_AGG_SQL),
            conn,
            params={
                "start": pd.Timestamp(start).to_pydatetime(),
                "end": pd.Timestamp(end).to_pydatetime(),
            },
        )
        out["warehouse_sql_seconds"] = round(time.perf_counter() - started, 3)
        conn.execute(sa.text("DROP TABLE seg"))
    engine.dispose()

    key = ["value_tier", "region", "industry"]
    a = (
        by_pandas.reset_index()[[*key, "csat", "nps", "surveys"]]
        .sort_values(key)
        .reset_index(drop=True)
    )
    for name, other in (("duckdb", by_duck), ("warehouse_sql", by_sql)):
        b = other[[*key, "csat", "nps", "surveys"]].sort_values(key).reset_index(drop=True)
        same = (
            len(a) == len(b)
            and np.allclose(a[["csat", "nps"]].astype(float), b[["csat", "nps"]].astype(float))
            and (a["surveys"].astype(int).to_numpy() == b["surveys"].astype(int).to_numpy()).all()
        )
        out[f"{name}_equal_to_pandas"] = bool(same)
    out["groups"] = len(a)
    out["surveys_in_quarter"] = int(a["surveys"].sum())
    return out


# -- incremental: mutate the sources ------------------------------------------------------
def mutate_sources(src: Path, share: float, seed: int = 0) -> int:
    """Add ``share / 2`` new rows (copies under new keys) and change ``share / 2`` rows of every
    source dataset; return the number of rows added or changed."""
    from pipeline.datasets import DATASETS

    rng = np.random.default_rng(seed)
    touched = 0
    for dataset in DATASETS.values():
        if dataset.system in ("sales", "service"):
            path = src / f"{dataset.system}.db"
            con = sqlite3.connect(path)
            try:
                touched += _mutate_table(con, dataset, share, rng, seed)
                con.commit()
            finally:
                con.close()
    touched += _mutate_finance_csvs(src / "finance", share, rng, seed)
    return touched


def _mutate_table(con: sqlite3.Connection, dataset, share: float, rng, seed: int = 0) -> int:
    table, key = dataset.raw, dataset.key_raw
    n = con.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
    k = max(int(n * share / 2), 1)
    columns = [row[1] for row in con.execute(f'PRAGMA table_info("{table}")')]
    rowids = np.fromiter((r[0] for r in con.execute(f'SELECT rowid FROM "{table}"')), np.int64)
    picked = rng.choice(rowids, min(2 * k, len(rowids)), replace=False).tolist()
    new, changed = picked[:k], picked[k:]
    # changed: a free-text or optional column takes another row's value
    editable = [
        c.raw for c in dataset.columns if not c.required and c.raw in columns and c.kind == "text"
    ]
    if editable and changed:
        column = editable[0]
        con.executemany(
            f'UPDATE "{table}" SET "{column}" = (SELECT "{column}" FROM "{table}" '
            f"WHERE rowid = ?) WHERE rowid = ?",
            list(zip(rng.choice(rowids, len(changed)).tolist(), changed, strict=True)),
        )
    quoted = ", ".join(f'"{c}"' for c in columns)
    suffix = f"-n{seed}"  # new keys; another seed's run adds others
    select = ", ".join(f"\"{c}\" || '{suffix}'" if c == key else f'"{c}"' for c in columns)
    con.executemany(
        f'INSERT INTO "{table}" ({quoted}) SELECT {select} FROM "{table}" WHERE rowid = ?',
        [(r,) for r in new],
    )
    return len(new) + (len(changed) if editable else 0)


def _mutate_finance_csvs(folder: Path, share: float, rng, seed: int = 0) -> int:
    """Rows added at the end of every finance CSV, written as the export writes its rows
    (encoding, quoting, line ends): a ledger's export grows at its end. (Rewriting the
    whole file through pandas, as this did before, changed every line end.)"""
    touched = 0
    for path in sorted(folder.glob("*.csv")):
        with path.open("rb") as file:
            head = file.read(4096)
        bom = head.startswith(b"\xef\xbb\xbf")
        ending = "\r\n" if b"\r\n" in head else "\n"
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding="utf-8-sig" if bom else "gb18030"
        )
        k = max(int(len(frame) * share), 1)
        extra = frame.sample(n=min(k, len(frame)), random_state=int(rng.integers(1 << 31))).copy()
        extra.iloc[:, 0] = extra.iloc[:, 0] + f"-n{seed}"
        with path.open("a", encoding="utf-8" if bom else "gb18030", newline="") as file:
            csv.writer(file, lineterminator=ending).writerows(extra.itertuples(index=False))
        touched += len(extra)
    return touched


# -- reporting -----------------------------------------------------------------------------
def whole_run_peak(stages: list[dict[str, Any]]) -> float:
    """Peak MiB of a whole run, stages that run at the same time summed (an upper bound):
    the extracts together, and quality_findings beside compute_metrics/check_contracts."""
    peak = {s["stage"]: s["peak_rss_mb"] for s in stages}
    together = [
        sum(v for k, v in peak.items() if k.startswith("extract_")),
        peak.get("quality_findings", 0)
        + max(peak.get("compute_metrics", 0), peak.get("check_contracts", 0)),
    ]
    return max([*peak.values(), *together], default=0)


def render_markdown(results: dict[str, Any]) -> str:
    lines = []
    m = results["machine"]
    lines.append(
        f"Measured {results['finished_at']} on {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gib']} GiB, {m['os']}, Python {m['python']}; warehouse: "
        f"{results['warehouse']}; load average at start {m['load_average_at_start']:.2f}."
    )
    lines.append("")
    lines.append(
        "| customers | history (quarters) | stage | rows in | seconds | CPU s | rows/s | peak MiB |"
    )
    lines.append("|---:|---:|---|---:|---:|---:|---:|---:|")
    for size in results["sizes"]:
        for s in size["stages"]:
            rps = f"{s['rows_in'] / s['seconds']:,.0f}" if s["rows_in"] and s["seconds"] else ""
            rows_in = f"{s['rows_in']:,}" if s["rows_in"] is not None else ""
            cpu = f"{s['cpu_seconds']:.1f}" if s.get("cpu_seconds") is not None else ""
            lines.append(
                f"| {size['customers']:,} | {size['history_quarters']} | {s['stage']} | {rows_in} | "
                f"{s['seconds']:.1f} | {cpu} | {rps} | {s['peak_rss_mb']:,.0f} |"
            )
        wall = size.get("wall_seconds") or {}
        total = wall.get("whole_run", sum(s["seconds"] for s in size["stages"]))
        peak = whole_run_peak(size["stages"])
        rows = sum(size["source_rows"].values())
        lines.append(
            f"| {size['customers']:,} | {size['history_quarters']} | **whole run** "
            f"(ingest {wall.get('ingest', 0):.0f} s + quarterly {wall.get('quarterly', 0):.0f} s) | "
            f"{rows:,} | **{total:.1f}** | {sum(s.get('cpu_seconds') or 0 for s in size['stages']):.0f} | "
            f"{rows / total if total else 0:,.0f} | **{peak:,.0f}** |"
        )
    lines.append("")
    if results.get("comparisons_from_run"):
        lines.append(f"Comparisons (same data; from the run of {results['comparisons_from_run']}):")
    else:
        lines.append("Comparisons (same data, same run):")
    lines.append("")
    for size in results["sizes"]:
        c = size["comparisons"]
        label = f"{size['customers']:,} customers, {size['history_quarters']} quarters"
        for name, value in c.items():
            if "error" in value:
                lines.append(f"- {label} — {name}: failed ({value['error']}).")

        def measured(name: str, c: dict = c) -> dict | None:
            value = c.get(name)
            return value if value and "error" not in value else None

        if lo := measured("load"):
            copy = (
                f", bare COPY {lo['copy_rows_per_second']:,} rows/s" if "copy_seconds" in lo else ""
            )
            lines.append(
                f"- {label} — load of {lo['rows']:,} rows: `to_sql` defaults "
                f"{lo['to_sql_rows_per_second']:,} rows/s, ours {lo['ours_rows_per_second']:,} rows/s "
                f"({lo['ours_vs_to_sql']}× faster){copy}."
            )
        if r := measured("resolution"):
            lines.append(
                f"- {label} — resolution on {r['records']:,} sampled records: ours "
                f"P {r['ours']['precision']:.3f} R {r['ours']['recall']:.3f} in {r['ours']['seconds']} s; "
                f"naive all-pairs name matcher P {r['naive']['precision']:.3f} "
                f"R {r['naive']['recall']:.3f} in {r['naive']['seconds']} s "
                f"({r['naive']['pairs_compared']:,} pairs)."
            )
        if a := measured("aggregation"):
            lines.append(
                f"- {label} — CSAT/NPS by tier × region × industry ({a['groups']} groups, "
                f"{a['surveys_in_quarter']:,} surveys): pandas {a['pandas_seconds']} s "
                f"(+{a['pandas_read_seconds']} s to read), DuckDB {a['duckdb_seconds']} s, "
                f"warehouse SQL {a['warehouse_sql_seconds']} s; equal: "
                f"DuckDB {a['duckdb_equal_to_pandas']}, SQL {a['warehouse_sql_equal_to_pandas']}."
            )
        if i := measured("incremental_ingest"):
            lines.append(
                f"- {label} — incremental ingest ({i['rows_added_or_changed']:,} rows added or "
                f"changed, {i['share_of_source_rows']:.1%}): {i['seconds']} s vs full ingest "
                f"{i['full_ingest_seconds']} s ({i['ratio_to_full_ingest']:.0%})"
                + (
                    f" and whole run {i['whole_run_seconds']} s ({i['ratio_to_whole_run']:.0%})."
                    if i.get("ratio_to_whole_run") is not None
                    else "."
                )
            )
    return "\n".join(lines)


def update_doc(doc: Path, table: str) -> None:
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    block = f"{DOC_START}\n{table}\n{DOC_END}"
    if DOC_START in text and DOC_END in text:
        head, rest = text.split(DOC_START, 1)
        _, tail = rest.split(DOC_END, 1)
        text = head + block + tail
    else:
        text = (text.rstrip() + "\n\n" if text else "# Benchmarks\n\n") + block + "\n"
    doc.write_text(text, encoding="utf-8")


def run_bench(
    sizes: list[int],
    workdir: Path,
    json_path: Path,
    doc: Path | None,
    warehouse: str = "postgres",
    pg_url: str = DEFAULT_PG,
    as_of: date | None = None,
    history: int = 12,
    history_sizes: list[int] | None = None,
    history_quarters: tuple[int, ...] = (4, 8),
    comparisons: bool = True,
    keep: bool = False,
    reuse_sources: bool = False,
    only: list[str] | None = None,
) -> dict[str, Any]:
    bench = Bench(workdir, warehouse, pg_url, as_of)
    results: dict[str, Any] = {
        "machine": machine(),
        "warehouse": warehouse,
        "as_of": bench.as_of.isoformat(),
        "quarter": str(bench.quarter),
        "sizes": [],
    }
    plan = [(n, history) for n in sizes]
    plan += [(n, h) for n in (history_sizes or []) for h in history_quarters]
    for customers, quarters in plan:
        log.info("bench: %s customers, %s quarters of history", customers, quarters)
        result = bench.generate(customers, quarters, reuse=reuse_sources)
        bench.full_run(result)
        if comparisons and quarters == history:
            _write(results | {"sizes": [*results["sizes"], asdict(result)]}, json_path, doc)
            for name, compare in (
                ("load", bench.compare_load),
                ("resolution", bench.compare_resolution),
                ("aggregation", bench.compare_aggregation),
                ("incremental_ingest", bench.incremental),
            ):
                if only and name not in only:
                    continue
                try:
                    compare(result)
                except Exception as error:  # one failed comparison must not lose the rest
                    log.exception("bench: comparison %s failed", name)
                    result.comparisons[name] = {"error": f"{type(error).__name__}: {error}"}
        entry = asdict(result)
        results["sizes"].append(entry)
        if not keep and not reuse_sources:
            shutil.rmtree(bench._dir(customers, quarters) / "src", ignore_errors=True)
        _write(results, json_path, doc)
    return results


def _write(results: dict[str, Any], json_path: Path, doc: Path | None) -> None:
    results["finished_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    if doc is not None:
        update_doc(doc, render_markdown(results))
