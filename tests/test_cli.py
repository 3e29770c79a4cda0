"""The CLI's answers to user mistakes: a clear message and exit code, never a traceback."""

from __future__ import annotations

from datetime import date

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.quarters import Quarter
from pipeline.settings import get_settings


@pytest.fixture(autouse=True)
def cli_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRM_CONFIG", raising=False)
    monkeypatch.setenv("CRM_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'warehouse.db'}")
    monkeypatch.setenv("CRM_OUT_DIR", str(tmp_path / "out"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.mark.parametrize("command", [["run"], ["report"], ["stage", "compute_metrics"]])
def test_quarters_that_have_not_ended_are_refused_before_anything_runs(command, cli_env):
    current = Quarter.of(date.today())
    for quarter, reason in ((current, "has not ended yet"), (current.shift(3), "has not begun")):
        result = CliRunner().invoke(app, [*command, "--quarter", str(quarter)])
        assert result.exit_code == 2, result.output
        assert reason in result.output
        assert str(Quarter.last_complete(date.today())) in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (cli_env / "warehouse.db").exists()
    assert not (cli_env / "out").exists()


def test_year_zero_is_not_a_quarter():
    with pytest.raises(ValueError, match="not a quarter"):
        Quarter.parse("0000Q1")
    result = CliRunner().invoke(app, ["report", "--quarter", "0000Q1"])
    assert result.exit_code == 2
    assert "not a quarter" in result.output


def _plain(result) -> str:
    # A clean message: the CLI exited on purpose, no traceback was printed.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return " ".join(result.output.split())


def test_bad_settings_name_the_value_and_keep_secrets(monkeypatch):
    monkeypatch.setenv("CRM_TIERS__VALUE_A_SHARE", "-1")
    monkeypatch.setenv("CRM_VALIDATION__DEFAULT_MAX_QUARANTINE_SHARE", "1.5")
    monkeypatch.setenv("CRM_SMTP__PASSWORD", "hunter2")
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 2
    output = _plain(result)
    assert "configuration error" in output
    assert "tiers.value_a_share: Input should be greater than 0 (got '-1')" in output
    assert "validation.default_max_quarantine_share" in output
    assert "hunter2" not in output


def test_misspelt_source_system_and_inverted_review_band_are_named(monkeypatch):
    monkeypatch.setenv("CRM_RESOLUTION__SOURCE_PRIORITY", '["sales", "finanse"]')
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 2
    assert "resolution.source_priority" in _plain(result) and "'finanse'" in _plain(result)
    monkeypatch.delenv("CRM_RESOLUTION__SOURCE_PRIORITY")
    monkeypatch.setenv("CRM_RESOLUTION__REVIEW_LOWER", "0.95")
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 2
    assert "review_lower (0.95) is above review_upper (0.9)" in _plain(result)


def test_malformed_or_missing_config_file_and_non_json_list(monkeypatch, cli_env):
    (cli_env / "crm-pipeline.toml").write_text('warehouse_url = "x\n[tiers\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["run", "--quarter", "2026Q3"])
    assert result.exit_code == 2
    assert "crm-pipeline.toml" in _plain(result)
    assert "line 1" in _plain(result)

    monkeypatch.setenv("CRM_CONFIG", str(cli_env / "nope.toml"))
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 2
    assert "CRM_CONFIG points at" in _plain(result)

    monkeypatch.delenv("CRM_CONFIG")
    (cli_env / "crm-pipeline.toml").unlink()
    monkeypatch.setenv("CRM_REPORTS__SATISFACTION_RECIPIENTS", "ceo@example.com")
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 2
    assert "are JSON" in _plain(result)


@pytest.mark.parametrize(
    "url", ["notaurl", "postgresql+psycopg://etl:s3cret@127.0.0.1:1/crm?connect_timeout=2"]
)
@pytest.mark.parametrize("command", [["migrate"], ["run", "--quarter", "2026Q3"]])
def test_unreachable_warehouse_fails_clearly(command, url, monkeypatch):
    monkeypatch.setenv("CRM_WAREHOUSE_URL", url)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1
    output = _plain(result)
    assert "FAILED: cannot open the warehouse" in output
    assert "s3cret" not in output


def test_misspelt_settings_are_named_not_ignored(monkeypatch, cli_env):
    (cli_env / "crm-pipeline.toml").write_text(
        "[tiers]\nvalue_a_shar = 0.5\n[tierz]\nx = 1\n", encoding="utf-8"
    )
    monkeypatch.setenv("CRM_SMTP__PASWORD", "hunter2")
    monkeypatch.setenv("CRM_AIRFLOW_RETRIES", "3")  # not a setting section: read elsewhere
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 2
    output = _plain(result)
    assert "tiers.value_a_shar: unknown setting" in output
    assert "tierz: unknown setting" in output
    assert "smtp.pasword: unknown setting" in output
    assert "hunter2" not in output


def test_track_changes_installs_the_log_in_a_sqlite_source(monkeypatch, tmp_path):
    import sqlite3

    from pipeline.extract import changelog

    sales = tmp_path / "sales.db"
    with sqlite3.connect(sales) as con:
        for table in ("crm_customer", "crm_contact", "sales_order", "sales_order_line"):
            con.execute(f"CREATE TABLE {table} (x TEXT)")
    monkeypatch.setenv("CRM_SOURCES__SALES_URL", f"sqlite:///{sales}")
    result = CliRunner().invoke(app, ["track-changes", "sales"])
    assert result.exit_code == 0, result.output
    snap = changelog.snapshot(sales, ["crm_customer", "sales_order_line"])
    assert snap is not None and snap.tracked == {"crm_customer", "sales_order_line"}
    # finance is files, and a missing database file is no SQLite source
    assert CliRunner().invoke(app, ["track-changes", "finance"]).exit_code == 2
    monkeypatch.setenv("CRM_SOURCES__SERVICE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    result = CliRunner().invoke(app, ["track-changes", "service"])
    assert result.exit_code == 2 and "not a SQLite file" in result.output
