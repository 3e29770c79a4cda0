"""Run one of the pipeline's functions in a process of its own, so that a stage uses both
cores: ``python -m pipeline.worker REQUEST REPLY``.

A plain subprocess rather than ``multiprocessing``: Airflow's Celery workers run tasks in
daemonic processes, which ``multiprocessing`` does not allow to have children. REQUEST is
a pickle of ``{"function": "module:name", "kwargs": {...}}``; REPLY gets ``("ok", value)``
or ``("error", exception)``. The worker's log goes to the caller's stderr (the task log).
"""

from __future__ import annotations

import importlib
import logging
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any


def call(function: str, folder: Path, label: str, **kwargs: Any) -> Any:
    """``function`` ("module:name") called with ``kwargs`` in a new Python process; its
    return value, or its exception raised here. ``folder`` holds the request and reply
    (a private scratch folder: the request may hold the warehouse URL with its password);
    ``label`` names them and the worker in errors."""
    request_path, reply_path = folder / f"{label}.request", folder / f"{label}.reply"
    request_path.write_bytes(pickle.dumps({"function": function, "kwargs": kwargs}))
    command = [sys.executable, "-m", "pipeline.worker", str(request_path), str(reply_path)]
    finished = subprocess.run(command, check=False)
    if not reply_path.is_file():
        raise RuntimeError(
            f"worker for {label} ended without a result (exit code {finished.returncode})"
        )
    status, value = pickle.loads(reply_path.read_bytes())
    if status == "error":
        raise value
    return value


def main(argv: list[str]) -> int:
    request_path, reply_path = (Path(a) for a in argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    request = pickle.loads(request_path.read_bytes())
    try:
        module, name = request["function"].split(":")
        function = getattr(importlib.import_module(module), name)
        reply: tuple = ("ok", function(**request["kwargs"]))
    except Exception as error:  # handed to the caller, which raises it
        reply = ("error", error)
    try:
        data = pickle.dumps(reply)
    except Exception:  # an exception that does not pickle: keep its type and message
        error = reply[1]
        data = pickle.dumps(("error", RuntimeError(f"{type(error).__name__}: {error}")))
    reply_path.write_bytes(data)
    return 0 if reply[0] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
