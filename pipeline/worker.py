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
import os
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
    finished = subprocess.run(command, check=False, env=_environment())
    return _reply(reply_path, label, finished.returncode)


LOG_LEVEL = "CRM_WORKER_LOG_LEVEL"


def _environment() -> dict[str, str]:
    """The caller's environment, with its log level for the pipeline's loggers (``-v``
    shows what the workers do; by default they say only what went wrong)."""
    level = logging.getLogger("pipeline").getEffectiveLevel()
    return {**os.environ, LOG_LEVEL: logging.getLevelName(max(level, logging.INFO))}


def _reply(reply_path: Path, label: str, returncode: int) -> Any:
    if not reply_path.is_file():
        raise RuntimeError(f"worker for {label} ended without a result (exit code {returncode})")
    status, value = pickle.loads(reply_path.read_bytes())
    if status == "error":
        raise value
    return value


class Started:
    """A worker process started before its work is known: it imports ``preload`` (the
    modules the work will need: seconds of imports) while the caller prepares the request,
    then reads the request from its stdin. :meth:`call` hands it over and waits for the
    result; :meth:`cancel` lets the process go without work."""

    def __init__(self, folder: Path, name: str, preload: tuple[str, ...] = ()) -> None:
        self.reply_path = folder / f"{name}.reply"
        command = [sys.executable, "-m", "pipeline.worker", "-", str(self.reply_path), *preload]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, env=_environment())

    def call(self, function: str, label: str, **kwargs: Any) -> Any:
        """As :func:`call`, in this process; ``label`` names the work in errors."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(pickle.dumps({"function": function, "kwargs": kwargs}))
            self.process.stdin.close()
        except BrokenPipeError:  # the process is gone already: its exit code says more
            pass
        return _reply(self.reply_path, label, self.process.wait())

    def cancel(self) -> None:
        """End the process if it was given no work (it was: wait for it, as call did)."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()  # no request: the process ends
        self.process.wait()


def main(argv: list[str]) -> int:
    request_arg, reply_arg, *preload = argv
    reply_path = Path(reply_arg)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pipeline").setLevel(os.environ.get(LOG_LEVEL, "WARNING"))
    if request_arg == "-":  # started ahead (Started): import, then wait for the request
        # (in this thread: importing in another while the work runs would race the
        # work's own imports into half-initialized modules)
        for module in preload:
            importlib.import_module(module)
        data = sys.stdin.buffer.read()
        if not data:
            return 0  # cancelled
        request = pickle.loads(data)
    else:
        request = pickle.loads(Path(request_arg).read_bytes())
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
