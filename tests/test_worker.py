"""pipeline.worker: a function run in a process of its own hands back its value or its error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import worker


def test_the_value_comes_back(tmp_path: Path) -> None:
    assert worker.call("json:dumps", tmp_path, "dumps", obj={"客户": [1, 2]}) == json.dumps(
        {"客户": [1, 2]}
    )


def test_the_error_is_raised_here(tmp_path: Path) -> None:
    with pytest.raises(json.JSONDecodeError, match="Expecting value"):
        worker.call("json:loads", tmp_path, "loads", s="not json")


def test_an_unknown_function_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AttributeError, match="no_such_function"):
        worker.call("json:no_such_function", tmp_path, "missing")


def test_only_an_in_memory_warehouse_is_not_shared_with_workers(tmp_path: Path) -> None:
    from pipeline import warehouse

    assert not warehouse.shared(warehouse.create_engine("sqlite://"))
    assert not warehouse.shared(warehouse.create_engine("sqlite:///:memory:"))
    assert warehouse.shared(warehouse.create_engine(f"sqlite:///{tmp_path / 'wh.db'}"))
    assert warehouse.shared(warehouse.create_engine("postgresql+psycopg://u@127.0.0.1/test"))
