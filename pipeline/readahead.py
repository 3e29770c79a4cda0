"""Read ahead in a thread: the next items of a slow reader (a database driver that works
without holding the GIL) are fetched while the caller works on the ones before."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Full, Queue
from typing import Any


def read_ahead(reader: Iterator[Any], depth: int = 2, name: str = "read-ahead") -> ReadAhead:
    """The items of ``reader`` in order, read by a thread started at once (so several
    readers' queries run side by side) and at most ``depth`` items ahead. The reader's
    errors are raised where its items were. Closing the result (or dropping it) stops the
    thread, which closes ``reader``: a generator's ``finally`` runs in the thread that ran
    it, even when no item was ever asked for."""
    return ReadAhead(reader, depth, name)


class ReadAhead:
    """The iterator :func:`read_ahead` returns."""

    def __init__(self, reader: Iterator[Any], depth: int, name: str):
        self.queue: Queue[tuple[str, Any]] = Queue(maxsize=depth)
        self.stop = threading.Event()
        self.reader = reader
        self.thread = threading.Thread(target=self._produce, name=name, daemon=True)
        self.thread.start()

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self.reader:
                if not self._put(("item", item)):
                    return
            self._put(("end", None))
        except BaseException as error:  # handed to the caller
            self._put(("error", error))
        finally:
            close = getattr(self.reader, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> ReadAhead:
        return self

    def __next__(self) -> Any:
        if self.stop.is_set():
            raise StopIteration
        kind, value = self.queue.get()
        if kind == "item":
            return value
        self.close()
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        self.stop.set()
        if self.thread is not threading.current_thread():
            self.thread.join()

    def __del__(self) -> None:
        self.close()
