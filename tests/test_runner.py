"""The run log under parallel tasks: every stage is recorded, whoever creates the table."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import sqlalchemy as sa

from pipeline import runner, warehouse
from pipeline.quarters import Quarter
from pipeline.settings import Settings
from pipeline.stages import StageContext

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def test_parallel_stages_all_land_in_a_new_run_log() -> None:
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    try:
        stages = [f"extract_{i}" for i in range(6)]

        def record(stage: str) -> None:
            ctx = StageContext(
                Settings(warehouse_url=url),
                warehouse.create_engine(url),
                Quarter.parse("2026Q3"),
                "run-1",
                datetime(2026, 10, 1),
            )
            row = {"batch_id": "run-1", "stage": stage, "quarter": "2026Q3"}
            runner._record(ctx, row | {"status": "success", "seconds": 1.0, "error": None})

        with ThreadPoolExecutor(len(stages)) as pool:
            list(pool.map(record, stages))
        logged = warehouse.read_table(warehouse.create_engine(url), "run_log")
        assert sorted(logged["stage"]) == stages
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
