"""Quarterly reporting: findings, tiers and metrics for the quarter that just closed, PDFs, email.

The data interval is the quarter (boundaries in Asia/Shanghai), so the run after a
quarter closes reports that quarter and ``airflow backfill create`` reports past
quarters. A manual run can name a quarter with the ``quarter`` param.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from pipeline.airflow_tasks import default_args, run_in_task


@task
def quality_findings() -> dict:
    return run_in_task("quality_findings")


@task
def compute_metrics() -> dict:
    return run_in_task("compute_metrics")


@task
def check_contracts() -> dict:
    return run_in_task("check_contracts")


@task
def render_reports() -> dict:
    return run_in_task("render_reports")


@task
def send_reports() -> dict:
    return run_in_task("send_reports")


@dag(
    dag_id="crm_quarterly_reports",
    schedule=CronDataIntervalTimetable("0 0 1 1,4,7,10 *", timezone="Asia/Shanghai"),
    start_date=pendulum.datetime(2025, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(
        retries=3, retry_delay=timedelta(minutes=5), execution_timeout=timedelta(hours=2)
    ),
    params={
        "quarter": Param(
            None,
            type=["null", "string"],
            description="Report this quarter (e.g. 2026Q3) instead of the data interval's",
        )
    },
    tags=["crm", "reporting"],
)
def crm_quarterly_reports():
    (
        [quality_findings(), compute_metrics() >> check_contracts()]
        >> render_reports()
        >> send_reports()
    )


crm_quarterly_reports()
