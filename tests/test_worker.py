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


def test_a_started_worker_answers_calls_in_turn(tmp_path: Path) -> None:
    """A worker started ahead does one call after another: each value (or error) comes
    back when its call is done, the process going on; closed, it ends cleanly."""
    started = worker.Started(tmp_path, "w", ("json",))
    assert started.call("json:dumps", "first", obj=[1]) == "[1]"
    with pytest.raises(json.JSONDecodeError):
        started.call("json:loads", "second", s="not json")
    assert started.call("json:loads", "third", s='{"客户": 2}') == {"客户": 2}
    assert started.process.poll() is None  # still there for more
    started.close()
    assert started.process.returncode == 0


def test_a_started_worker_that_dies_is_an_error_naming_the_call(tmp_path: Path) -> None:
    started = worker.Started(tmp_path, "w")
    assert started.call("posixpath:basename", "first", p="a/b") == "b"
    # The process ends in the middle of the second call: that call fails (its reply is not
    # the first call's), saying how the process ended.
    with pytest.raises(
        RuntimeError, match=r"worker for second ended without a result \(exit code 3\)"
    ):
        started.call("os:_exit", "second", status=3)
    started.close()


def test_calls_handed_over_at_once_come_back_in_turn(tmp_path: Path) -> None:
    """Several calls handed over at once: each value comes back as its call is done, in
    order; an error is raised where its value would be."""
    started = worker.Started(tmp_path, "w", ("json",))
    work = [("a", {"obj": 1}), ("b", {"obj": [2]}), ("c", {"obj": "三"})]
    assert list(started.calls("json:dumps", work)) == ["1", "[2]", '"\\u4e09"']
    results = started.calls("json:loads", [("ok", {"s": "1"}), ("bad", {"s": "{"})])
    assert next(results) == 1
    with pytest.raises(json.JSONDecodeError):
        next(results)
    started.close()
    assert started.process.returncode == 0
