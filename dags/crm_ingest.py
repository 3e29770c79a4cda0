"""Daily ingest: extract the three source systems, validate, resolve customers.

Each task is one pipeline stage; tasks overwrite their own tables, so retries and
reruns are safe. Outlets are Assets, so downstream DAGs can be data-aware.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, task

from pipeline.airflow_tasks import default_args, run_in_task

RAW = {system: Asset(f"crm://warehouse/raw/{system}") for system in ("sales", "service", "finance")}
STAGED = Asset("crm://warehouse/staging")
CUSTOMERS = Asset("crm://warehouse/core/customers")


@task(outlets=[RAW["sales"]])
def extract_sales() -> dict:
    return run_in_task("extract_sales")


@task(outlets=[RAW["service"]])
def extract_service() -> dict:
    return run_in_task("extract_service")


@task(outlets=[RAW["finance"]])
def extract_finance() -> dict:
    return run_in_task("extract_finance")


@task(outlets=[STAGED])
def validate() -> dict:
    return run_in_task("validate")


@task(outlets=[CUSTOMERS])
def resolve_customers() -> dict:
    return run_in_task("resolve_customers")


@dag(
    dag_id="crm_ingest",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(
        retries=2, retry_delay=timedelta(minutes=2), execution_timeout=timedelta(hours=1)
    ),
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
