"""Work spread over worker processes (validate's datasets, an extract's datasets).

``python -m pipeline.workers REQUEST REPLY``: REQUEST is a pickle of ``(target, kwargs)``,
``target`` a ``module:function`` name; REPLY gets ``("ok", result)`` or ``("error",
exception)``. A plain subprocess rather than ``multiprocessing``: Airflow's Celery workers
run tasks in daemonic processes, which ``multiprocessing`` does not allow to have children.
"""

from __future__ import annotations

import importlib
import logging
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_in_worker(folder: Path, label: str, target: str, kwargs: dict[str, Any]) -> Any:
    """``target(**kwargs)`` in a new Python process; its result, or its exception raised
    here. Request and reply files go to ``folder``; the worker's log goes to this process's
    stderr (the task log)."""
    request_path, reply_path = folder / f"{label}.request", folder / f"{label}.reply"
    request_path.write_bytes(pickle.dumps((target, kwargs)))
    command = [sys.executable, "-m", "pipeline.workers", str(request_path), str(reply_path)]
    finished = subprocess.run(command, check=False)
    if not reply_path.is_file():
        raise RuntimeError(
            f"worker for {label} ended without a result (exit code {finished.returncode})"
        )
    status, value = pickle.loads(reply_path.read_bytes())
    if status == "error":
        raise value
    return value


def plan_workers(sizes: dict[str, int], workers: int) -> list[list[str]]:
    """Names spread over at most ``workers`` processes: largest first, each to the process
    with the least so far (each process pays its imports once)."""
    loads = [0] * workers
    plan: list[list[str]] = [[] for _ in range(workers)]
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        least = loads.index(min(loads))
        plan[least].append(name)
        loads[least] += sizes[name] + 1
    return [names for names in plan if names]


def main(argv: list[str]) -> int:
    request_path, reply_path = (Path(a) for a in argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    target, kwargs = pickle.loads(request_path.read_bytes())
    module, _, function = target.partition(":")
    try:
        reply: tuple = ("ok", getattr(importlib.import_module(module), function)(**kwargs))
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
