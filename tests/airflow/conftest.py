"""One real Airflow per test module (module scope): started once, always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.airflow.deployment import Deployment, deploy


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, demo_sources: Path
) -> Iterator[Deployment]:
    """Airflow with the LocalExecutor."""
    with deploy(tmp_path_factory.mktemp("airflow_local"), demo_sources, "LocalExecutor") as d:
        yield d


@pytest.fixture(scope="module")
def celery_deployment(
    tmp_path_factory: pytest.TempPathFactory, demo_sources: Path
) -> Iterator[Deployment]:
    """Airflow with the CeleryExecutor: the local Redis as broker, one Celery worker."""
    with deploy(tmp_path_factory.mktemp("airflow_celery"), demo_sources, "CeleryExecutor") as d:
        yield d
