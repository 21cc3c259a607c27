"""The database clock's offset (engine.clock): a reading that waited is passed over, since it
is off by up to half its round trip, more than a short step lasts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine import clock

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fresh_clock(monkeypatch):
    monkeypatch.setattr(clock, "_offset", timedelta(0))
    monkeypatch.setattr(clock, "_measured_at", float("-inf"))
    monkeypatch.setattr(clock, "_round_trip", timedelta(0))


def read(offset_ms: float, round_trip_ms: float) -> None:
    """A reading sent at START, the database stamping the midpoint plus `offset_ms`."""
    round_trip = timedelta(milliseconds=round_trip_ms)
    database_time = START + round_trip / 2 + timedelta(milliseconds=offset_ms)
    clock.observe(database_time, START, START + round_trip)


def test_quick_readings_set_the_offset():
    read(offset_ms=40, round_trip_ms=1)
    assert clock._offset == timedelta(milliseconds=40)
    read(offset_ms=42, round_trip_ms=3)
    assert clock._offset == timedelta(milliseconds=42)


def test_a_reading_that_waited_on_a_lock_is_passed_over():
    read(offset_ms=40, round_trip_ms=1)
    # A heartbeat's UPDATE that waited 400 ms for a row lock: its statement time is from the
    # start of the wait, so its offset reads 200 ms behind.
    read(offset_ms=-160, round_trip_ms=400)
    assert clock._offset == timedelta(milliseconds=40)


def test_the_first_reading_and_a_stale_offset_take_any_reading(monkeypatch):
    read(offset_ms=-160, round_trip_ms=400)
    assert clock._offset == timedelta(milliseconds=-160)
    read(offset_ms=40, round_trip_ms=1)  # quicker than the one kept: taken
    assert clock._offset == timedelta(milliseconds=40)
    monkeypatch.setattr(clock, "_measured_at", clock._measured_at - clock.MEASURED_FOR_SECONDS - 1)
    read(offset_ms=90, round_trip_ms=400)  # slow, but the last kept one is too old to keep
    assert clock._offset == timedelta(milliseconds=90)
