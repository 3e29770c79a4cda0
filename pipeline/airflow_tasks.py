"""The bridge between Airflow and pipeline stages.

DAG files import this module when they are parsed, so it imports nothing heavy at
module level: pandas, SQLAlchemy and the stages are imported inside the task
callables, when a task runs.

Settings are overlaid with Airflow Connections when they exist:
``crm_warehouse`` (the warehouse URL), ``crm_sales`` and ``crm_service`` (source
database URLs), ``crm_finance`` (``extra.path``: the finance export folder) and
``crm_smtp`` (SMTP host, port, login, password, ``extra.from_email``).

Retries are read from the environment when a DAG file is parsed
(``CRM_AIRFLOW_RETRIES``, ``CRM_AIRFLOW_RETRY_DELAY_SECONDS``), so a test or a
staging deployment can fail fast without editing DAG files.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.quarters import Quarter
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

RETRIES_ENV = "CRM_AIRFLOW_RETRIES"
RETRY_DELAY_ENV = "CRM_AIRFLOW_RETRY_DELAY_SECONDS"


def _env_number(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a number") from None
    if value < minimum:
        raise ValueError(f"environment variable {name}={raw!r} is below {minimum:g}")
    return value


def default_args(retries: int, retry_delay: timedelta, execution_timeout: timedelta) -> dict:
    """A DAG's ``default_args``: retries with exponential backoff, a timeout, the failure alert.

    ``retries`` and ``retry_delay`` are the production values; the environment variables
    ``CRM_AIRFLOW_RETRIES`` and ``CRM_AIRFLOW_RETRY_DELAY_SECONDS`` override them.
    """
    return {
        "owner": "data-engineering",
        "retries": int(_env_number(RETRIES_ENV, retries, 0)),
        "retry_delay": timedelta(
            seconds=_env_number(RETRY_DELAY_ENV, retry_delay.total_seconds(), 0)
        ),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": execution_timeout,
        "on_failure_callback": alert_on_failure,
    }


def run_in_task(stage: str) -> dict[str, Any]:
    """The body of every DAG task: run ``stage`` for the current Airflow run."""
    from airflow.sdk import get_current_context

    return run_stage_task(stage, get_current_context())


def _connection(conn_id: str) -> Any | None:
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception:  # not defined: the settings file and environment stay in force
        return None


def _sqlalchemy_url(conn: Any) -> str:
    if conn.conn_type == "sqlite":  # Airflow's SQLite connections hold the file path in host
        return f"sqlite:///{conn.host}"
    uri = conn.get_uri()
    for prefix, replacement in (
        ("postgres://", "postgresql+psycopg://"),
        ("postgresql://", "postgresql+psycopg://"),
    ):
        if uri.startswith(prefix):
            return replacement + uri[len(prefix) :]
    return uri


def airflow_settings() -> Settings:
    """Settings with Airflow Connections overlaid (secrets never logged)."""
    from pipeline.settings import get_settings

    settings = get_settings()
    update: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    if conn := _connection("crm_warehouse"):
        update["warehouse_url"] = _sqlalchemy_url(conn)
    if conn := _connection("crm_sales"):
        sources["sales_url"] = _sqlalchemy_url(conn)
    if conn := _connection("crm_service"):
        sources["service_url"] = _sqlalchemy_url(conn)
    if (conn := _connection("crm_finance")) and conn.extra_dejson.get("path"):
        sources["finance_dir"] = conn.extra_dejson["path"]
    if conn := _connection("crm_smtp"):
        smtp = {
            "host": conn.host,
            "port": conn.port or 25,
            "username": conn.login or None,
            "password": conn.password or None,
        }
        extra = conn.extra_dejson
        smtp["sender"] = extra.get("from_email", settings.smtp.sender)
        smtp["starttls"] = bool(extra.get("starttls", settings.smtp.starttls))
        smtp["use_ssl"] = bool(extra.get("ssl", settings.smtp.use_ssl))
        update["smtp"] = _validated(settings.smtp, smtp)
    if sources:
        update["sources"] = _validated(settings.sources, sources)
    return settings.model_copy(update=update)


def _validated(section: Any, values: dict[str, Any]) -> Any:
    """``section`` with ``values`` applied and validated (a folder becomes a Path, a port an int)."""
    return type(section).model_validate({**section.model_dump(), **values})


def quarter_for(
    params: dict[str, Any], data_interval_start: datetime | None, timezone: str
) -> Quarter:
    """The quarter a run computes: the ``quarter`` param if given, else the one its data interval starts in."""
    from zoneinfo import ZoneInfo

    from pipeline.quarters import Quarter

    if params.get("quarter"):
        return Quarter.parse(str(params["quarter"]))
    if data_interval_start is None:
        raise ValueError("a run without data interval must name a quarter in its params")
    return Quarter.of(data_interval_start.astimezone(ZoneInfo(timezone)).date())


def run_interval(context: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    """The run's data interval; a manual run without one (Airflow 3) has the instant it was queued.

    ``run_after`` is stored with the run, so a retry or a cleared run sees the same
    instant: no task reads the clock.
    """
    run_after = getattr(context.get("dag_run"), "run_after", None)
    start = context.get("data_interval_start") or run_after
    end = context.get("data_interval_end") or context.get("logical_date") or run_after
    return start, end


def run_quarter(stage: str, context: dict[str, Any], timezone: str) -> Quarter:
    """The quarter ``stage`` computes in the Airflow run ``context``.

    The ``quarter`` param wins, else the quarter the data interval starts in. A manual
    run without data interval (Airflow 3) ingests for the quarter it was queued in, but
    reports (quarterly stages) the last quarter that had ended by then.
    """
    from zoneinfo import ZoneInfo

    from pipeline.quarters import Quarter
    from pipeline.runner import QUARTERLY_STAGES

    params = context.get("params") or {}
    start, _ = run_interval(context)
    reporting = stage in (*QUARTERLY_STAGES, "send_reports")
    manual = context.get("data_interval_start") is None and start is not None
    if reporting and manual and not params.get("quarter"):
        return Quarter.last_complete(start.astimezone(ZoneInfo(timezone)).date())
    return quarter_for(params, start, timezone)


def run_stage_task(stage: str, context: dict[str, Any]) -> dict[str, Any]:
    """Run one stage for the Airflow run in ``context``; returns the stage's row counts (small XCom)."""
    from pipeline.runner import make_context, run_stage

    settings = airflow_settings()
    _, interval_end = run_interval(context)
    quarter = run_quarter(stage, context, settings.timezone)
    # The batch is stamped with the end of the run's data interval, never the wall clock,
    # so a rerun of the same Airflow run writes the same rows.
    if interval_end is not None:
        extracted_at = interval_end.astimezone(UTC).replace(tzinfo=None)
    else:
        extracted_at = quarter.end_utc(settings.timezone)
    batch_id = context["dag_run"].run_id if context.get("dag_run") else f"{stage}-{quarter}"
    ctx = make_context(settings, quarter, batch_id, extracted_at)
    result = run_stage(ctx, stage)
    log.info("%s %s: %s rows in, %s rows out", stage, quarter, result.rows_in, result.rows_out)
    return {
        "stage": result.stage,
        "quarter": str(quarter),
        "rows_in": result.rows_in,
        "rows_out": result.rows_out,
    }


def alert_on_failure(context: dict[str, Any]) -> None:
    """Airflow ``on_failure_callback``: email the data engineers the DAG, task, quarter and error."""
    from pipeline.alerts import send_failure_alert

    settings = airflow_settings()
    ti = context.get("task_instance") or context.get("ti")
    try:
        quarter = str(run_quarter(getattr(ti, "task_id", ""), context, settings.timezone))
    except ValueError:
        quarter = "unknown quarter"
    dag_run = context.get("dag_run")
    send_failure_alert(
        settings,
        dag_id=getattr(ti, "dag_id", "?"),
        task_id=getattr(ti, "task_id", "?"),
        quarter=quarter,
        run_id=getattr(dag_run, "run_id", "?"),
        error=str(context.get("exception") or "see the task log"),
    )
