"""Fixtures for validation tests: demo sources landed into raw_<dataset> of a SQLite warehouse."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline import warehouse
from pipeline.datasets import datasets_of
from pipeline.demo import generate_demo_sources
from pipeline.extract import ADAPTERS
from pipeline.quarters import Quarter
from pipeline.settings import Settings, SourceSettings
from pipeline.stages import StageContext, StageResult

AS_OF = date(2026, 11, 23)
EXTRACTED_AT = datetime(2026, 11, 23, 2, 0, 0)


def demo_settings(tmp: Path) -> Settings:
    """Settings reading demo sources under ``tmp/sources`` and writing to ``tmp/wh.db``."""
    sources = tmp / "sources"
    return Settings(
        sources=SourceSettings(
            sales_url=f"sqlite:///{sources}/sales.db",
            service_url=f"sqlite:///{sources}/service.db",
            finance_dir=sources / "finance",
        ),
        warehouse_url=f"sqlite:///{tmp}/wh.db",
        out_dir=tmp / "out",
    )


def land_raw(settings: Settings, batch_id: str = "b1") -> None:
    """Extract every source system into raw_<dataset> (what the extract stage does)."""
    engine = warehouse.create_engine(settings.warehouse_url)
    for system, adapter in ADAPTERS.items():
        chunks: dict[str, list[pd.DataFrame]] = {d.name: [] for d in datasets_of(system)}
        for name, chunk in adapter(settings, batch_id, EXTRACTED_AT):
            chunks[name].append(chunk)
        for name, parts in chunks.items():
            warehouse.replace_table(engine, f"raw_{name}", pd.concat(parts, ignore_index=True))
    engine.dispose()


def execute_sql(settings: Settings, *statements: str) -> None:
    """Run SQL statements on the settings' warehouse in one transaction (test set-up)."""
    engine = sa.create_engine(settings.warehouse_url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def make_context(settings: Settings, batch_id: str = "b1") -> StageContext:
    return StageContext(
        settings=settings,
        engine=warehouse.create_engine(settings.warehouse_url),
        quarter=Quarter.parse("2026Q4"),
        batch_id=batch_id,
        extracted_at=EXTRACTED_AT,
    )


@pytest.fixture(scope="session")
def demo_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo sources for 200 customers (generated once per session), with their truth/."""
    root = tmp_path_factory.mktemp("demo")
    generate_demo_sources(root / "sources", customers=200, seed=11, as_of=AS_OF)
    return root


def _landed(demo_sources: Path, folder: Path) -> Settings:
    (folder / "sources").symlink_to(demo_sources / "sources")
    settings = demo_settings(folder)
    land_raw(settings)
    return settings


@pytest.fixture()
def landed(demo_sources: Path, tmp_path: Path) -> Settings:
    """Settings whose warehouse holds the demo sources in raw_<dataset> (fresh per test)."""
    return _landed(demo_sources, tmp_path)


@pytest.fixture(scope="module")
def validated(
    demo_sources: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[StageContext, StageResult]:
    """One validate run on the landed demo sources, shared by read-only tests of a module."""
    from pipeline.validation import run

    ctx = make_context(_landed(demo_sources, tmp_path_factory.mktemp("validated")))
    return ctx, run(ctx)
