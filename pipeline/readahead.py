"""Read ahead in a thread: the next items of a slow reader (a database driver that works
without holding the GIL) are fetched while the caller works on the ones before."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from queue import Full, Queue
from typing import Any


def read_ahead(
    reader: Iterator[Any], depth: int = 2, name: str = "read-ahead"
) -> Generator[Any, None, None]:
    """The items of ``reader`` in order, read by a thread started at once (so several
    readers' queries run side by side) and at most ``depth`` items ahead. The reader's
    errors are raised where its items were. Closing the result stops the thread, which
    closes ``reader`` (a generator's ``finally`` runs in the thread that ran it)."""
    queue: Queue[tuple[str, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in reader:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as error:  # handed to the caller
            put(("error", error))
        finally:
            close = getattr(reader, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    return _drain(queue, stop, thread)


def _drain(
    queue: Queue[tuple[str, Any]], stop: threading.Event, thread: threading.Thread
) -> Generator[Any, None, None]:
    try:
        while True:
            kind, value = queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()
