"""Daily ingest: extract the three source systems, validate, resolve customers.

Each task is one pipeline stage; tasks overwrite their own tables, so retries and
reruns are safe. Outlets are Assets, so downstream DAGs can be data-aware.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task


def _alert(context) -> None:
    from pipeline.airflow_tasks import alert_on_failure

    alert_on_failure(context)


DEFAULT_ARGS = {
    "owner": "data-engineering",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "on_failure_callback": _alert,
    "execution_timeout": timedelta(hours=1),
}
RAW = {system: Asset(f"crm://warehouse/raw/{system}") for system in ("sales", "service", "finance")}
STAGED = Asset("crm://warehouse/staging")
CUSTOMERS = Asset("crm://warehouse/core/customers")


def _run(stage: str) -> dict:
    from pipeline.airflow_tasks import run_stage_task

    return run_stage_task(stage, get_current_context())


@task(outlets=[RAW["sales"]])
def extract_sales() -> dict:
    return _run("extract_sales")


@task(outlets=[RAW["service"]])
def extract_service() -> dict:
    return _run("extract_service")


@task(outlets=[RAW["finance"]])
def extract_finance() -> dict:
    return _run("extract_finance")


@task(outlets=[STAGED])
def validate() -> dict:
    return _run("validate")


@task(outlets=[CUSTOMERS])
def resolve_customers() -> dict:
    return _run("resolve_customers")


@dag(
    dag_id="crm_ingest",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        "quarter": Param(
            None,
            type=["null", "string"],
            description="Quarter for data-quality findings, e.g. 2026Q3",
        )
    },
    tags=["crm", "ingest"],
)
def crm_ingest():
    [extract_sales(), extract_service(), extract_finance()] >> validate() >> resolve_customers()


crm_ingest()
