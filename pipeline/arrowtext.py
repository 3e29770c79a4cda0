"""Text columns in Arrow's C kernels, agreeing exactly with Python's ``str`` methods.

Typing millions of raw values spends most of its time on stripping and finding blanks;
Arrow does both several times faster than a Python loop over the values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# What ``str.strip()`` removes and ``str.isspace()`` counts: Arrow trims exactly these.
WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())


def as_arrow_text(values: np.ndarray) -> Any:
    """An object array of ``str`` and missing values (None, NaN, NA) as an Arrow string
    array (missing values null); None when any value is something else."""
    import pyarrow as pa

    try:
        array = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None
    if pa.types.is_null(array.type):
        return pa.nulls(len(array), pa.string())
    return array if pa.types.is_string(array.type) else None


def stripped(array: Any) -> Any:
    """``str.strip()`` of each value of an Arrow string array."""
    import pyarrow.compute as pc

    return pc.utf8_trim(array, characters=WHITESPACE)
