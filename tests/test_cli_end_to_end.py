"""End to end: ``crm-pipeline demo-data`` then ``crm-pipeline run`` on a small dataset, twice."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from pipeline import warehouse
from pipeline.cli import app
from pipeline.settings import get_settings

pytestmark = pytest.mark.slow


POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
        return
    schema = f"e2e_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    admin.dispose()


@pytest.fixture
def cli_env(tmp_path, monkeypatch, warehouse_url):
    sources = tmp_path / "sources"
    monkeypatch.setenv("CRM_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("CRM_OUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("CRM_SOURCES__SALES_URL", f"sqlite:///{sources / 'sales.db'}")
    monkeypatch.setenv("CRM_SOURCES__SERVICE_URL", f"sqlite:///{sources / 'service.db'}")
    monkeypatch.setenv("CRM_SOURCES__FINANCE_DIR", str(sources / "finance"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_demo_then_run_twice_gives_identical_tables(cli_env):
    runner = CliRunner()
    generated = runner.invoke(
        app,
        [
            "demo-data",
            "--out",
            str(cli_env / "sources"),
            "--customers",
            "120",
            "--seed",
            "5",
            "--as-of",
            "2026-11-23",
        ],
    )
    assert generated.exit_code == 0, generated.output

    first = runner.invoke(app, ["run", "--quarter", "2026Q3", "--batch-id", "b1"])
    assert first.exit_code == 0, first.output
    for stage in ("extract_sales", "validate", "resolve", "compute_metrics", "render_reports"):
        assert stage in first.output
    engine = warehouse.create_engine(get_settings().warehouse_url)
    tables = [
        "raw_sales_orders",
        "stg_sales_orders",
        "quarantine",
        "core_customers",
        "mart_customer_quarter",
        "mart_metrics",
    ]

    def digests() -> dict[str, str]:
        # extracted_at records when the CLI really read the sources; everything else must repeat.
        return {
            t: warehouse.frame_digest(
                warehouse.read_table(engine, t).drop(
                    columns=["extracted_at", "raw_row"], errors="ignore"
                )
            )
            for t in tables
        }

    before = digests()
    pdfs = sorted(p.name for p in (cli_env / "out").rglob("*.pdf"))
    assert len(pdfs) == 2, pdfs

    second = runner.invoke(app, ["run", "--quarter", "2026Q3", "--batch-id", "b1"])
    assert second.exit_code == 0, second.output
    after = digests()
    assert after == before

    log = warehouse.read_table(engine, "run_log")
    assert set(log["status"]) == {"success"}


def test_run_fails_clearly_when_a_source_is_missing(cli_env):
    result = CliRunner().invoke(app, ["run", "--quarter", "2026Q3"])
    assert result.exit_code == 1
    assert "stage extract_sales failed" in result.output
    assert "sales.db" in result.output
