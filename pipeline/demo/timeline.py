"""The history window of the demo data: whole quarters ending at the as-of day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

HISTORY_QUARTERS = 12


@dataclass(frozen=True)
class Timeline:
    """Days are counted from ``start`` (day 0); ``as_of`` is the last day with data."""

    start: date
    as_of: date
    # Activity per customer is calibrated for HISTORY_QUARTERS of history; a longer or
    # shorter history scales it, so the rate per day stays the same.
    rate_scale: float = 1.0

    @property
    def as_of_day(self) -> int:
        return (self.as_of - self.start).days

    @property
    def end_second(self) -> int:
        """Last second with data, counted from ``start`` 00:00:00."""
        return (self.as_of_day + 1) * 86_400 - 1

    def timestamps(self, seconds: np.ndarray) -> np.ndarray:
        """Seconds since ``start`` as local naive ``datetime64[s]``."""
        return np.datetime64(self.start, "s") + np.asarray(seconds, dtype="int64").astype(
            "timedelta64[s]"
        )

    def dates(self, days: np.ndarray) -> np.ndarray:
        """Days since ``start`` as ``datetime64[D]``."""
        return np.datetime64(self.start, "D") + np.asarray(days, dtype="int64").astype(
            "timedelta64[D]"
        )


def build_timeline(as_of: date, quarters: int = HISTORY_QUARTERS) -> Timeline:
    """History from the first day of the quarter ``quarters`` before as_of's quarter.

    With the default that is 12 whole quarters plus the quarter to date.
    """
    quarter_index = as_of.year * 4 + (as_of.month - 1) // 3 - quarters
    start = date(quarter_index // 4, (quarter_index % 4) * 3 + 1, 1)
    return Timeline(start=start, as_of=as_of, rate_scale=quarters / HISTORY_QUARTERS)
