"""Quarantine defects: inject bad rows, give every row its key, add duplicate keys.

A quarantine defect is always a *new* row: a clone of a random good row with a fresh
key and exactly one field broken. Real rows therefore stay coherent (their lines,
payments and surveys add up) and a broken row has no child rows, so a child is
never bad merely because its parent is quarantined. ``duplicate_key`` rows are
copies of good rows that keep the key and are placed later in the table; the later
copy is the defect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.demo.activity import DAY, HOUR, Table

DEFECT_RATE = 0.008  # per defect type, as a share of the real rows of a table
DUPLICATE_RATE = 0.006

_OUT_OF_RANGE_YEARS = np.array(
    ["2099-01-01", "1970-01-01", "1900-01-01", "2098-01-01"], dtype="datetime64[D]"
)

Mutator = Callable[[Table, np.random.Generator], None]


@dataclass(frozen=True)
class Injection:
    """A defect code and how to break a cloned row so that it shows exactly that defect."""

    code: str
    mutate: Mutator
    rate: float = DEFECT_RATE


@dataclass(frozen=True)
class Finalized:
    """A table with keys, in row order, plus the defect code of every row ('' = good)."""

    table: Table
    defect: np.ndarray
    key_of_base: np.ndarray


def _blank(values: np.ndarray) -> np.ndarray:
    if np.issubdtype(values.dtype, np.datetime64):
        return np.full(len(values), np.datetime64("NaT"), dtype=values.dtype)
    if np.issubdtype(values.dtype, np.floating):
        return np.full(len(values), np.nan)
    return np.full(len(values), -1, dtype=values.dtype)


def blank_one_of(*columns: str) -> Mutator:
    """``missing_required``: each row gets one of ``columns`` blanked."""

    def mutate(table: Table, rng: np.random.Generator) -> None:
        which = rng.integers(0, len(columns), len(table[columns[0]]))
        for i, column in enumerate(columns):
            mask = which == i
            table[column][mask] = _blank(table[column][mask])

    return mutate


def unknown_reference(column: str, first_unknown: int) -> Mutator:
    """``unknown_*``: the reference points just past the highest key that exists."""

    def mutate(table: Table, rng: np.random.Generator) -> None:
        spread = max(20, first_unknown // 20)
        table[column] = first_unknown + rng.integers(0, spread, len(table[column]))

    return mutate


def out_of_range(column: str, future_only: bool = False, then: Mutator | None = None) -> Mutator:
    """``date_out_of_range``: a date in 2098/2099, or 1970/1900 unless ``future_only``."""

    def mutate(table: Table, rng: np.random.Generator) -> None:
        values = table[column]
        n = len(values)
        years = _OUT_OF_RANGE_YEARS[[0, 3]] if future_only else _OUT_OF_RANGE_YEARS
        day = years[rng.integers(0, len(years), n)]
        far = day + np.where(
            day.astype("datetime64[Y]") >= np.datetime64("2098", "Y"), rng.integers(0, 365, n), 0
        ).astype("timedelta64[D]")
        if values.dtype == np.dtype("datetime64[s]"):
            table[column] = far.astype("datetime64[s]") + rng.integers(
                8 * HOUR, 18 * HOUR, n
            ).astype("timedelta64[s]")
        else:
            table[column] = far.astype(values.dtype)
        if then is not None:
            then(table, rng)

    return mutate


def negate(column: str, clear: str | None = None) -> Mutator:
    """``negative_amount``: the amount turned negative (``clear`` is blanked to keep one defect)."""

    def mutate(table: Table, rng: np.random.Generator) -> None:
        table[column] = -np.abs(table[column])
        if clear is not None:
            table[clear] = np.full(len(table[clear]), np.nan)

    return mutate


def before(column: str, reference: str, max_days: int, then: Mutator | None = None) -> Mutator:
    """``*_before_*``: ``column`` set up to ``max_days`` before ``reference``."""

    def mutate(table: Table, rng: np.random.Generator) -> None:
        ref = table[reference]
        unit = np.datetime_data(ref.dtype)[0]
        low, high = (HOUR, max_days * DAY) if unit == "s" else (1, max_days)
        offset = rng.integers(low, high + 1, len(ref)).astype(f"timedelta64[{unit}]")
        table[column] = (ref - offset).astype(table[column].dtype)
        if then is not None:
            then(table, rng)

    return mutate


def replace(column: str, choices: tuple[float, ...]) -> Mutator:
    """Values out of their allowed range, e.g. CSAT 0/6/7."""

    def mutate(table: Table, rng: np.random.Generator) -> None:
        table[column] = np.asarray(choices, dtype=table[column].dtype)[
            rng.integers(0, len(choices), len(table[column]))
        ]

    return mutate


def finalize(
    table: Table,
    injections: list[Injection],
    key_column: str,
    first_key: int,
    rng: np.random.Generator,
    eligible: np.ndarray | None = None,
    touch: Mutator | None = None,
) -> Finalized:
    """Inject defect rows, order rows by ``_sort``, number them, then add duplicate keys.

    ``table`` is consumed (its columns are moved into the result one at a time, so a
    large table is never held twice). ``eligible`` marks real rows that may be cloned
    (rows without a finding defect). ``touch`` changes a non-key field on half the
    duplicate copies (a re-exported row), without introducing another defect.
    """
    n = len(table["_sort"])
    pool = np.flatnonzero(eligible) if eligible is not None else np.arange(n)
    clones: list[Table] = []
    codes = [np.full(n, "", dtype=object)]
    for injection in injections:
        count = int(rng.binomial(n, injection.rate)) if len(pool) else 0
        source = pool[rng.integers(0, len(pool), count)]
        clone = {name: values[source].copy() for name, values in table.items()}
        injection.mutate(clone, rng)
        clones.append(clone)
        codes.append(np.full(count, injection.code, dtype=object))
    order = np.argsort(
        np.concatenate([table["_sort"], *(clone["_sort"] for clone in clones)]), kind="stable"
    )
    rows = len(order)
    rank = np.empty(rows, dtype=np.int64)
    rank[order] = np.arange(rows)
    defect = np.concatenate(codes)[order]
    usable = np.concatenate(
        [np.ones(n, bool) if eligible is None else eligible, np.zeros(rows - n, bool)]
    )
    good = np.flatnonzero((defect == "") & usable[order])

    # duplicate copies of good rows, each placed somewhere after its original
    count = min(int(rng.binomial(n, DUPLICATE_RATE)), len(good))
    source = np.sort(rng.choice(good, size=count, replace=False)) if count else good[:0]
    position = np.concatenate(
        [np.arange(rows, dtype=float), source + 0.5 + np.floor(rng.random(count) * (rows - source))]
    )
    final_order = np.argsort(position, kind="stable")
    sorted_position = np.concatenate([np.arange(rows), source])[final_order]
    gather = order[sorted_position]
    final: Table = {}
    for name in list(table):
        column = np.concatenate([table.pop(name), *(clone.pop(name) for clone in clones)])
        final[name] = column[gather]
        del column
    final[key_column] = first_key + sorted_position
    defect = np.concatenate([defect, np.full(count, "duplicate_key", dtype=object)])[final_order]
    if touch is not None and count:
        copy_rows = np.flatnonzero(final_order >= rows)
        touched = copy_rows[rng.random(len(copy_rows)) < 0.5]
        part = {name: values[touched] for name, values in final.items()}
        touch(part, rng)
        for name, values in part.items():
            final[name][touched] = values
    return Finalized(table=final, defect=defect, key_of_base=first_key + rank[:n])
