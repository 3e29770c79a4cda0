"""``crm-pipeline``: the command-line face of the pipeline (same functions as the Airflow tasks)."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.quarters import Quarter
from pipeline.settings import Settings, get_settings

app = typer.Typer(
    help="Batch ETL and reporting for customer files: extract, validate, resolve, tier, report.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

QuarterOption = Annotated[
    str | None,
    typer.Option(
        "--quarter",
        "-q",
        help="Quarter to compute, e.g. 2026Q3. Default: the latest complete quarter.",
    ),
]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # Splink logs model-training notes as warnings; they belong in verbose runs only.
        for handler in logging.getLogger().handlers:
            handler.addFilter(
                lambda record: (
                    not (record.name.startswith("splink") and record.levelno < logging.ERROR)
                )
            )


def _now() -> datetime:
    # The CLI is an edge: it reads the clock once and hands the value to the stages.
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _settings() -> Settings:
    """The settings, or a plain message naming each bad value (exit code 2) instead of a traceback."""
    import tomllib

    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return get_settings()
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            where = ".".join(str(part) for part in problem["loc"])
            unknown = problem["type"] == "extra_forbidden"
            # An unknown key may be a misspelt password: its value is never echoed either.
            secret = unknown or any(word in where for word in ("pass", "url", "secret"))
            shown = "" if secret or "input" not in problem else f" (got {problem['input']!r})"
            what = "unknown setting" if unknown else problem["msg"]
            lines.append(f"  {where}: {what}{shown}")
        message = "\n".join(lines)
    except SettingsError as error:
        message = (
            f"  {error}\n  (lists and tables in CRM_* variables are JSON, e.g. "
            """CRM_REPORTS__SATISFACTION_RECIPIENTS='["ceo@example.com"]')"""
        )
    except (tomllib.TOMLDecodeError, FileNotFoundError) as error:
        message = f"  {error}"
    source = _config_source()
    console.print(
        f"[bold red]configuration error[/] (CRM_* environment variables"
        f"{f' and {source}' if source else ''}):",
        highlight=False,
    )
    console.print(message, markup=False, highlight=False)
    raise typer.Exit(code=2)


def _config_source() -> str | None:
    from pipeline.settings import config_path

    try:
        path = config_path()
    except FileNotFoundError:
        return None
    return str(path) if path else None


def _migrate(settings: Settings) -> None:
    """Bring the warehouse schema up to date; a warehouse that cannot be opened fails clearly."""
    from sqlalchemy.exc import SQLAlchemyError

    from pipeline import warehouse

    try:
        warehouse.migrate(warehouse.create_engine(settings.warehouse_url))
    except (SQLAlchemyError, OSError) as error:
        console.print(
            f"[bold red]FAILED[/]: cannot open the warehouse "
            f"{settings.redacted()['warehouse_url']}:",
            highlight=False,
        )
        console.print(str(error), markup=False, highlight=False)
        raise typer.Exit(code=1) from None


def _quarter(text: str | None, complete: bool = True) -> Quarter:
    """The --quarter value (default: the latest complete quarter). Reports and metrics cover
    quarters that have ended (``complete``); no command takes a quarter that has not begun."""
    today = date.today()
    if not text:
        return Quarter.last_complete(today)
    try:
        quarter = Quarter.parse(text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--quarter") from error
    if quarter.start_date > today:
        raise typer.BadParameter(
            f"{quarter} has not begun yet (today is {today}); the latest complete quarter "
            f"is {Quarter.last_complete(today)}",
            param_hint="--quarter",
        )
    if complete and quarter.end_date >= today:
        raise typer.BadParameter(
            f"{quarter} has not ended yet (it ends {quarter.end_date}): its metrics and reports "
            f"would be incomplete; the latest complete quarter is {Quarter.last_complete(today)}",
            param_hint="--quarter",
        )
    return quarter


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress at INFO level.")
    ] = False,
) -> None:
    """Settings come from crm-pipeline.toml (or $CRM_CONFIG) and CRM_* environment variables."""
    _setup_logging(verbose)


@app.command("demo-data")
def demo_data(
    out: Annotated[
        Path, typer.Option(help="Folder to write the three source systems and ground truth into.")
    ] = Path("data/sources"),
    customers: Annotated[int, typer.Option(min=1, help="Number of real companies.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 42,
    as_of: Annotated[
        str | None, typer.Option(help="Last day with data (YYYY-MM-DD). Default: today.")
    ] = None,
    history_quarters: Annotated[
        int, typer.Option(min=1, help="Whole quarters of history before the as-of quarter.")
    ] = 12,
) -> None:
    """Generate realistic demo sources: sales.db, service.db, finance/ (xlsx + GBK CSV) and truth/."""
    from pipeline.demo import generate_demo_sources

    last_day = date.fromisoformat(as_of) if as_of else date.today()
    manifest = generate_demo_sources(
        out, customers=customers, seed=seed, as_of=last_day, history_quarters=history_quarters
    )
    table = Table(title=f"demo sources in {out}")
    table.add_column("dataset")
    table.add_column("rows", justify="right")
    for name, count in manifest.get("row_counts", {}).items():
        table.add_row(str(name), f"{count:,}")
    console.print(table)


def _run(stage_names: list[str], quarter: Quarter, batch_id: str | None) -> None:
    from pipeline.runner import StageFailed, make_context, run_stages

    started_at = _now()
    ctx = make_context(
        _settings(), quarter, batch_id or started_at.strftime("%Y%m%dT%H%M%S"), started_at
    )
    summary = Table(title=f"crm-pipeline run {ctx.batch_id} — quarter {quarter}")
    for column, justify in (
        ("stage", "left"),
        ("rows in", "right"),
        ("rows out", "right"),
        ("seconds", "right"),
    ):
        summary.add_column(column, justify=justify)

    def on_done(result, seconds: float) -> None:
        summary.add_row(
            result.stage, f"{result.rows_in:,}", f"{result.rows_out:,}", f"{seconds:.1f}"
        )

    status = console.status("starting")
    with status:
        try:
            run_stages(
                ctx,
                stage_names,
                on_start=lambda name: status.update(f"running {name}…"),
                on_done=on_done,
            )
        except StageFailed as error:
            console.print(summary)
            console.print(f"[bold red]FAILED[/]: {error}")
            raise typer.Exit(code=1) from error
    console.print(summary)


@app.command()
def run(
    quarter: QuarterOption = None,
    send: Annotated[bool, typer.Option("--send", help="Also email the reports.")] = False,
    batch_id: Annotated[
        str | None, typer.Option(help="Batch id (default: the start time).")
    ] = None,
) -> None:
    """Run the whole pipeline: extract, validate, resolve, tiers and metrics, reports (and email)."""
    from pipeline.runner import INGEST_STAGES, QUARTERLY_STAGES

    chosen = _quarter(quarter)
    _migrate(_settings())
    names = [*INGEST_STAGES, *QUARTERLY_STAGES] + (["send_reports"] if send else [])
    _run(names, chosen, batch_id)


@app.command("track-changes")
def track_changes(
    system: Annotated[str, typer.Argument(help="The database source: sales or service.")],
) -> None:
    """Install a change log in a SQLite source (a table and triggers), so that incremental
    extracts read only the rows changed since the last one (docs/sources.md)."""
    import sqlite3

    from pipeline.datasets import datasets_of
    from pipeline.extract import changelog

    settings = _settings()
    urls = {"sales": settings.sources.sales_url, "service": settings.sources.service_url}
    if system not in urls:
        console.print(f"[bold red]unknown database source {system!r}[/]: sales or service")
        raise typer.Exit(code=2)
    path = changelog.sqlite_path(urls[system])
    if path is None or not path.is_file():
        console.print(
            f"[bold red]{system} source is not a SQLite file[/]: for another database, create "
            "the log and its triggers as docs/sources.md shows",
            highlight=False,
        )
        raise typer.Exit(code=2)
    tables = [d.raw for d in datasets_of(system)]
    try:
        source_id = changelog.install(path, tables)
    except sqlite3.Error as error:
        console.print(f"[bold red]cannot install the change log in {path}[/]: {error}")
        raise typer.Exit(code=1) from None
    console.print(
        f"{system}: changes to {', '.join(tables)} are logged in {changelog.LOG} of {path} "
        f"(log {source_id}); an incremental extract reads only what the log names (once "
        "the source has been landed with the log in place)",
        highlight=False,
    )


@app.command()
def migrate() -> None:
    """Bring the warehouse schema to the newest version (run after installing or upgrading)."""
    settings = _settings()
    _migrate(settings)
    console.print(f"warehouse {settings.redacted()['warehouse_url']} is at the newest schema")


@app.command()
def stage(
    names: Annotated[list[str], typer.Argument(help="Stage names, run in the order given.")],
    quarter: QuarterOption = None,
    batch_id: Annotated[
        str | None, typer.Option(help="Batch id (default: the start time).")
    ] = None,
) -> None:
    """Run single stages (extract_sales, validate, resolve_customers, compute_metrics, …)."""
    from pipeline.runner import QUARTERLY_STAGES, STAGES

    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise typer.BadParameter(
            f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}"
        )
    # Ingest stages may land the quarter in progress; quarterly stages need a complete one.
    ingest_only = all(n not in (*QUARTERLY_STAGES, "send_reports") for n in names)
    _run(names, _quarter(quarter, complete=not ingest_only), batch_id)


@app.command()
def report(
    quarter: QuarterOption = None,
    send: Annotated[
        bool, typer.Option("--send", help="Email the reports to their distribution lists.")
    ] = False,
) -> None:
    """Render the quarter's archive-review and satisfaction PDFs (and optionally send them)."""
    stages = ["quality_findings", "render_reports"] + (["send_reports"] if send else [])
    _run(stages, _quarter(quarter), None)


@app.command()
def dedupe(
    input_csv: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The CSV export to deduplicate.")
    ],
    id_column: Annotated[str, typer.Option(help="Column holding each record's unique id.")],
    fields: Annotated[
        Path,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="FIELDS.yaml: column -> role (company_name, person_name, address, phone, email, identifier, date, free_text).",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for pairs.csv and clusters.csv.")],
) -> None:
    """Deduplicate any CSV export: writes OUT/pairs.csv and OUT/clusters.csv."""
    from pipeline.dedupe import DedupeInputError
    from pipeline.dedupe import dedupe as run_dedupe

    try:
        run_dedupe(input_csv, id_column, fields, out, _settings().resolution)
    except DedupeInputError as error:
        console.print(f"dedupe failed: {error}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    console.print(f"wrote {out / 'pairs.csv'} and {out / 'clusters.csv'}")


@app.command("bench-resolution")
def bench_resolution(
    sources: Annotated[
        Path, typer.Option(help="A demo source folder (with truth/entities.csv).")
    ] = Path("data/sources"),
) -> None:
    """Score customer resolution on demo ground truth: precision, recall, F1, records/s."""
    import json

    from pipeline.bench_resolution import benchmark

    sys.stdout.write(json.dumps(benchmark(sources, _settings()), indent=2) + "\n")


def _int_list(text: str) -> list[int]:
    try:
        return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise typer.BadParameter(f"expected numbers separated by commas, got {text!r}") from error


@app.command()
def bench(
    sizes: Annotated[
        str, typer.Option(help="Customer counts to run, comma-separated.")
    ] = "1000,10000,100000",
    history_sizes: Annotated[
        str,
        typer.Option(
            help="Customer counts also run with --history-quarters of history ('' = none)."
        ),
    ] = "10000",
    history_quarters: Annotated[
        str,
        typer.Option(help="Quarters of history for the --history-sizes runs, comma-separated."),
    ] = "4,8",
    warehouse: Annotated[
        str, typer.Option(help="Warehouse for the runs: postgres or sqlite.")
    ] = "postgres",
    pg_url: Annotated[
        str, typer.Option(help="PostgreSQL URL; each size gets its own schema bench_c<N>_h<Q>.")
    ] = "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    workdir: Annotated[Path, typer.Option(help="Scratch folder for sources and logs.")] = Path(
        "out/bench"
    ),
    json_out: Annotated[Path, typer.Option("--json", help="Where to write the results.")] = Path(
        "out/bench/results.json"
    ),
    doc: Annotated[
        Path | None, typer.Option(help="Markdown file whose bench table is refreshed.")
    ] = Path("docs/benchmarks.md"),
    as_of: Annotated[
        str | None, typer.Option(help="Last day of demo data (YYYY-MM-DD). Default: today.")
    ] = None,
    comparisons: Annotated[
        bool, typer.Option(help="Also measure the alternatives and the incremental ingest.")
    ] = True,
    compare: Annotated[
        str | None,
        typer.Option(
            help="Only these comparisons (comma-separated: load, resolution, aggregation, "
            "incremental_ingest)."
        ),
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the generated sources.")] = False,
    reuse_sources: Annotated[
        bool,
        typer.Option(help="Reuse sources kept by an earlier run with the same parameters."),
    ] = False,
) -> None:
    """Time every stage (wall, peak memory, rows/s) at several sizes, against the alternatives."""
    from pipeline.bench import render_markdown, run_bench

    if warehouse not in ("postgres", "sqlite"):
        raise typer.BadParameter("postgres or sqlite", param_hint="--warehouse")
    results = run_bench(
        _int_list(sizes),
        workdir,
        json_out,
        doc,
        warehouse=warehouse,
        pg_url=pg_url,
        as_of=date.fromisoformat(as_of) if as_of else None,
        history_sizes=_int_list(history_sizes),
        history_quarters=tuple(_int_list(history_quarters)),
        comparisons=comparisons,
        keep=keep,
        reuse_sources=reuse_sources,
        only=[n.strip() for n in compare.split(",")] if compare else None,
    )
    sys.stdout.write(render_markdown(results) + "\n")
    console.print(f"results: {json_out}" + (f", table refreshed in {doc}" if doc else ""))


@app.command()
def settings() -> None:
    """Print the settings in effect (secrets masked)."""
    import json

    sys.stdout.write(json.dumps(_settings().redacted(), ensure_ascii=False, indent=2) + "\n")


if __name__ == "__main__":
    app()
