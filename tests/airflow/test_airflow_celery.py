"""The same DAGs under the CeleryExecutor: Redis (127.0.0.1:6379) as broker, an ``airflow celery worker``.

Tasks reach the worker through a queue named for this test only, so other users of
the local Redis neither see nor take them.
"""

from __future__ import annotations

import pytest

from tests.airflow.deployment import Deployment, run_ingest_and_quarterly

pytestmark = [pytest.mark.airflow, pytest.mark.postgres, pytest.mark.slow]


def test_ingest_then_quarterly_reports_on_celery_workers(celery_deployment: Deployment):
    ingest, _ = run_ingest_and_quarterly(celery_deployment)
    worker_log = (celery_deployment.airflow.home / "celery-worker.log").read_text(errors="replace")
    # The worker, not the scheduler, ran the tasks: Celery logs each task it received.
    assert "Received task" in worker_log or "received" in worker_log.lower(), worker_log[-2000:]
    assert celery_deployment.airflow.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert ingest
