"""Shared fixtures: small generated demo sources and settings pointing at them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path

import pytest

from pipeline.demo import generate_demo_sources
from pipeline.quarters import Quarter
from pipeline.runner import make_context
from pipeline.settings import Settings, SourceSettings
from pipeline.stages import StageContext

AS_OF = date(2026, 11, 23)
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextmanager
def postgres_schema() -> Iterator:
    """An engine on the local PostgreSQL whose tables go to a fresh schema, dropped after."""
    from pipeline import warehouse

    admin = warehouse.create_engine(POSTGRES_URL)
    schema = f"t_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    scoped = warehouse.create_engine(POSTGRES_URL + f"?options=-csearch_path%3D{schema}")
    try:
        yield scoped
    finally:
        scoped.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(scope="session")
def demo_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo sources for 150 companies (read-only: tests must not modify them)."""
    out = tmp_path_factory.mktemp("demo")
    generate_demo_sources(out, customers=150, seed=11, as_of=AS_OF)
    return out


def settings_for(sources: Path, warehouse_url: str, out_dir: Path) -> Settings:
    return Settings(
        warehouse_url=warehouse_url,
        out_dir=out_dir,
        sources=SourceSettings(
            sales_url=f"sqlite:///{sources / 'sales.db'}",
            service_url=f"sqlite:///{sources / 'service.db'}",
            finance_dir=sources / "finance",
        ),
    )


@pytest.fixture
def demo_settings(demo_sources: Path, tmp_path: Path) -> Settings:
    return settings_for(demo_sources, f"sqlite:///{tmp_path / 'warehouse.db'}", tmp_path / "out")


@pytest.fixture
def demo_context(demo_settings: Settings) -> StageContext:
    return make_context(demo_settings, Quarter(2026, 3), "test-batch", datetime(2026, 11, 23))
