"""Run one of the pipeline's functions in a process of its own, so that a stage uses both
cores: ``python -m pipeline.worker REQUEST REPLY``.

A plain subprocess rather than ``multiprocessing``: Airflow's Celery workers run tasks in
daemonic processes, which ``multiprocessing`` does not allow to have children. REQUEST is
a pickle of ``{"function": "module:name", "kwargs": {...}}``; REPLY gets ``("ok", value)``
or ``("error", exception)``. The worker's log goes to the caller's stderr (the task log).
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
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
    modules the work will need: seconds of imports) while the caller prepares its requests,
    then does the calls it is given one after another. :meth:`calls` hands several over
    at once and gives each result as it is ready, the process going on with the next;
    :meth:`close` lets the process end (given no work, it ends at once).

    Each request goes to the process's stdin, length first, naming its reply file; the
    process writes the reply there and then a line to its stdout saying it is."""

    def __init__(self, folder: Path, name: str, preload: tuple[str, ...] = ()) -> None:
        self.folder, self.name, self.sent = folder, name, 0
        command = [
            sys.executable,
            "-m",
            "pipeline.worker",
            "-",
            str(folder / f"{name}.reply"),
            *preload,
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_environment()
        )

    def call(self, function: str, label: str, **kwargs: Any) -> Any:
        """As :func:`call`, in this process; ``label`` names the work in errors."""
        return next(self.calls(function, [(label, kwargs)]))

    def calls(self, function: str, work: list[tuple[str, dict[str, Any]]]) -> Iterator[Any]:
        """``function`` called with each (label, kwargs) of ``work`` in turn, all handed
        over at once (so the process starts the next as soon as one is done); each value
        as it is ready, or its error raised here."""
        assert self.process.stdin is not None and self.process.stdout is not None
        replies = []
        for label, kwargs in work:
            self.sent += 1
            reply_path = self.folder / f"{self.name}.{self.sent}.reply"
            request = {"function": function, "kwargs": kwargs, "reply": str(reply_path)}
            data = pickle.dumps(request)
            try:
                self.process.stdin.write(len(data).to_bytes(8, "big") + data)
                self.process.stdin.flush()
            except BrokenPipeError:  # the process is gone already: its exit code says more
                pass
            replies.append((label, reply_path))
        for label, reply_path in replies:
            replied = bool(self.process.stdout.readline())  # else it ended before replying
            yield _reply(reply_path, label, 0 if replied else self.process.wait())

    def close(self) -> None:
        """Let the process end once its calls are done, and wait for it."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()  # no more requests: the process ends
        self.process.wait()


def _requests(stream: Any) -> Iterator[dict]:
    """The requests a :class:`Started` caller writes to ``stream`` until it closes it."""
    while header := stream.read(8):
        yield pickle.loads(stream.read(int.from_bytes(header, "big")))


def _answer(request: dict, reply_path: Path) -> bool:
    """Call what ``request`` names and write its reply; whether it returned."""
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
    return reply[0] == "ok"


def main(argv: list[str]) -> int:
    request_arg, reply_arg, *preload = argv
    reply_path = Path(reply_arg)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pipeline").setLevel(os.environ.get(LOG_LEVEL, "WARNING"))
    if request_arg != "-":  # one request, from a file (call)
        return 0 if _answer(pickle.loads(Path(request_arg).read_bytes()), reply_path) else 1
    # Started ahead: import, then answer the requests on stdin until it closes (imports in
    # this thread: importing in another while the work runs would race the work's own
    # imports into half-initialized modules). Each "the reply is there" goes to the real
    # stdout; anything the work prints goes to stderr, with the log.
    for module in preload:
        importlib.import_module(module)
    ready = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for request in _requests(sys.stdin.buffer):
        _answer(request, Path(request.get("reply", reply_path)))
        ready.write(b"ready\n")
        ready.flush()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # The reply is written and the caller waits for this process to end: end it without
    # tearing the interpreter down (freeing every module and object took a validate worker
    # about a second). The exit handlers still run: they close the cached warehouse
    # connections and flush the log.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
