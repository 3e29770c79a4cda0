"""A PostgreSQL warehouse lands a system's datasets on several processes at once; the
result must be exactly one process's landing, and a failure must leave the last landing."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline import warehouse
from pipeline.datasets import datasets_of
from pipeline.extract import changes, land_system, worker_count
from pipeline.extract.base import SourceError
from pipeline.quarters import Quarter
from pipeline.runner import make_context
from pipeline.settings import Settings
from tests.conftest import settings_for

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
EXTRACTED_AT = datetime(2026, 11, 23, 2, 0)


@pytest.fixture()
def schemas() -> Iterator[list[str]]:
    admin = sa.create_engine(POSTGRES_URL)
    names = [f"t_land_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with admin.begin() as conn:
        for name in names:
            conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    yield [f"{POSTGRES_URL}?options=-csearch_path%3D{n}" for n in names]
    with admin.begin() as conn:
        for name in names:
            conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
    admin.dispose()


def _settings(sources: Path, url: str, out: Path, workers: int) -> Settings:
    settings = settings_for(sources, url, out)
    settings.sources.workers = workers
    return settings


def _land(settings: Settings, system: str, batch: str = "b1") -> dict:
    ctx = make_context(settings, Quarter(2026, 4), batch, EXTRACTED_AT)
    try:
        return land_system(ctx, system).detail
    finally:
        ctx.engine.dispose()


def _raw(url: str, table: str) -> pd.DataFrame:
    engine = warehouse.create_engine(url)
    try:
        frame = warehouse.read_table(engine, table)
    finally:
        engine.dispose()
    return frame.sort_values("source_row").reset_index(drop=True)


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("system", ["sales", "service", "finance"])
def test_workers_land_what_one_process_lands(
    system: str, demo_sources: Path, tmp_path: Path, schemas: list[str]
) -> None:
    one = _settings(demo_sources, schemas[0], tmp_path / "one", workers=1)
    two = _settings(demo_sources, schemas[1], tmp_path / "two", workers=2)
    ctx = make_context(two, Quarter(2026, 4), "b1", EXTRACTED_AT)
    assert worker_count(ctx, system) == 2
    ctx.engine.dispose()
    assert _land(one, system) == _land(two, system)
    for dataset in datasets_of(system):
        table = f"raw_{dataset.name}"
        pd.testing.assert_frame_equal(_raw(schemas[0], table), _raw(schemas[1], table))
    assert not {t for t in _tables(schemas[1]) if t.endswith("__new")}
    engine = sa.create_engine(schemas[1])
    with engine.connect() as conn:
        assert all(changes.pending(conn, d.name).full for d in datasets_of(system))
        assert all(changes.in_source_order(conn, d.name) for d in datasets_of(system))
    engine.dispose()


def test_a_failing_worker_leaves_the_last_landing(
    demo_sources: Path, tmp_path: Path, schemas: list[str]
) -> None:
    """The order lines' table is gone from the source on the second day: its worker fails,
    the other worker's datasets are not put in place either, and nothing is left behind."""
    sources = tmp_path / "sources"
    shutil.copytree(demo_sources, sources)
    settings = _settings(sources, schemas[0], tmp_path / "out", workers=2)
    first = _land(settings, "sales")
    before = {d.name: _raw(schemas[0], f"raw_{d.name}") for d in datasets_of("sales")}
    with sqlite3.connect(sources / "sales.db") as con:
        con.execute("DELETE FROM crm_customer WHERE rowid % 2 = 0")
        con.execute("DROP TABLE sales_order_line")
    with pytest.raises(SourceError, match="table sales_order_line not found"):
        _land(settings, "sales", batch="b2")
    for name, frame in before.items():
        pd.testing.assert_frame_equal(_raw(schemas[0], f"raw_{name}"), frame)
    assert not {t for t in _tables(schemas[0]) if t.endswith("__new")}
    assert first["rows"]["sales_customers"] == len(before["sales_customers"])
