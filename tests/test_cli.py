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
