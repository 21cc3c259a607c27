"""The database's clock, as seen from this host: ownership and wake times never trust the host.

On PostgreSQL the offset between the database's clock and this host's is measured by each
worker's heartbeat every second, and by any other process at least once a minute. A SQLite
file lives on this host, so there the two are the same clock.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime, timedelta

from django.db import DatabaseError, connection
from django.utils import timezone

# A process without a heartbeat (the web app, a script) measures again this often.
MEASURED_FOR_SECONDS = 60.0

# A reading whose round trip took longer than twice the last kept one's (and this long) is
# passed over: a statement that waited (a row lock, a busy server) is off by up to half its
# round trip, more than a short step lasts. A passed-over reading is kept once the last kept
# one is MEASURED_FOR_SECONDS old.
QUICK_ROUND_TRIP = timedelta(milliseconds=5)

_offset = timedelta(0)
_measured_at = float("-inf")
_round_trip = timedelta(0)
_lock = threading.Lock()


def now() -> datetime:
    """The database's current time, to within half a round trip."""
    if connection.vendor == "postgresql" and time.monotonic() - _measured_at > MEASURED_FOR_SECONDS:
        with contextlib.suppress(DatabaseError):  # unreachable: keep the last offset
            measure()
    return timezone.now() + _offset


def to_host(moment: datetime) -> datetime:
    """A database time as this host's clock reads it (for queue ETAs, which use host clocks)."""
    return moment - _offset


def measure() -> None:
    """Read the database's clock once (PostgreSQL only)."""
    connection.ensure_connection()  # connecting is not part of the round trip
    sent = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        (database_time,) = cursor.fetchone()
    observe(database_time, sent, timezone.now())


def observe(database_time: datetime, sent: datetime, received: datetime) -> None:
    """Record the offset from a database timestamp read between `sent` and `received`,
    unless the reading waited much longer than the last one kept."""
    global _offset, _measured_at, _round_trip
    round_trip = received - sent
    with _lock:
        fresh = time.monotonic() - _measured_at <= MEASURED_FOR_SECONDS
        if fresh and round_trip > max(2 * _round_trip, QUICK_ROUND_TRIP):
            return
        _offset = database_time - (sent + round_trip / 2)
        _measured_at = time.monotonic()
        _round_trip = round_trip
