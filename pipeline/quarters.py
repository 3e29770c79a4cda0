"""Calendar quarters in the company's time zone: the partition key of every quarterly table."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

_QUARTER_RE = re.compile(r"^\s*(\d{4})\s*-?\s*[Qq]([1-4])\s*$")


@dataclass(frozen=True, order=True)
class Quarter:
    """One calendar quarter, e.g. ``Quarter(2026, 3)`` = 2026Q3 (July-September)."""

    year: int
    number: int

    def __post_init__(self) -> None:
        if not 1 <= self.number <= 4:
            raise ValueError(f"quarter number must be 1-4, got {self.number}")

    @classmethod
    def parse(cls, text: str) -> Quarter:
        """Parse ``2026Q3`` (also ``2026-Q3``, ``2026q3``)."""
        match = _QUARTER_RE.match(text or "")
        if not match:
            raise ValueError(f"not a quarter: {text!r} (expected e.g. 2026Q3)")
        if int(match.group(1)) < 1:
            raise ValueError(f"not a quarter: {text!r} (the year must be 0001 or later)")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def of(cls, day: date) -> Quarter:
        """The quarter a calendar date falls in."""
        return cls(day.year, (day.month - 1) // 3 + 1)

    @classmethod
    def last_complete(cls, today: date) -> Quarter:
        """The latest quarter that has fully ended before ``today``."""
        return cls.of(today).shift(-1)

    def __str__(self) -> str:
        return f"{self.year}Q{self.number}"

    @property
    def start_date(self) -> date:
        return date(self.year, 3 * self.number - 2, 1)

    @property
    def end_date(self) -> date:
        """The last day of the quarter (inclusive)."""
        return self.shift(1).start_date - timedelta(days=1)

    def shift(self, quarters: int) -> Quarter:
        index = self.year * 4 + (self.number - 1) + quarters
        return Quarter(index // 4, index % 4 + 1)

    def previous(self) -> Quarter:
        return self.shift(-1)

    def start_utc(self, timezone: str) -> datetime:
        """The quarter's first instant, as a naive UTC datetime."""
        return _local_midnight_utc(self.start_date, timezone)

    def end_utc(self, timezone: str) -> datetime:
        """The instant the quarter ends (exclusive), as a naive UTC datetime."""
        return _local_midnight_utc(self.shift(1).start_date, timezone)


def _local_midnight_utc(day: date, timezone: str) -> datetime:
    local = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone))
    return local.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
