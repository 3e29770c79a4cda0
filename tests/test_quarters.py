from datetime import date, datetime

import pytest

from pipeline.quarters import Quarter


def test_parse_and_format():
    assert Quarter.parse("2026Q3") == Quarter(2026, 3)
    assert Quarter.parse("2026-q1") == Quarter(2026, 1)
    assert str(Quarter(2026, 3)) == "2026Q3"
    with pytest.raises(ValueError, match="not a quarter"):
        Quarter.parse("2026Q5")


def test_boundaries_and_shift():
    q = Quarter(2026, 1)
    assert (q.start_date, q.end_date) == (date(2026, 1, 1), date(2026, 3, 31))
    assert q.previous() == Quarter(2025, 4)
    assert q.shift(5) == Quarter(2027, 2)
    assert Quarter.last_complete(date(2026, 11, 23)) == Quarter(2026, 3)
    assert Quarter.last_complete(date(2026, 10, 1)) == Quarter(2026, 3)
    assert Quarter.of(date(2026, 9, 30)) == Quarter(2026, 3)


def test_utc_bounds_in_company_time_zone():
    q = Quarter(2026, 3)
    # Midnight 1 July in Shanghai is 16:00 UTC the day before.
    assert q.start_utc("Asia/Shanghai") == datetime(2026, 6, 30, 16, 0)
    assert q.end_utc("Asia/Shanghai") == datetime(2026, 9, 30, 16, 0)
    assert q.end_utc("UTC") == datetime(2026, 10, 1)
