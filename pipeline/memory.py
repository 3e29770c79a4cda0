"""Handing freed memory back to the operating system between the phases of a stage."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc


def release_freed_memory() -> None:
    """Collect garbage and give the C heap's free pages back (glibc's ``malloc_trim``).

    Many small Python objects freed at once (the memos of a resolution run) leave free
    memory that the process keeps; DuckDB and Arrow, which allocate outside Python's
    allocator, cannot reuse it, so without this the next phase's peak sits on top of it
    (resolution at 100,000 customers: 2,955 against 2,686 MB). Does nothing where the C
    library has no ``malloc_trim`` (not glibc).
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # no such library or function
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
