"""The database's clock, as seen from this host: ownership and wake times never trust the host.

The heartbeat measures how far the database's clock is from this host's each second (on
PostgreSQL; a SQLite file lives on this host, so there the two are the same clock).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

_offset = timedelta(0)


def now() -> datetime:
    """The database's current time, to within half a round trip."""
    return timezone.now() + _offset


def to_host(moment: datetime) -> datetime:
    """A database time as this host's clock reads it (for queue ETAs, which use host clocks)."""
    return moment - _offset


def observe(database_time: datetime, sent: datetime, received: datetime) -> None:
    """Record the offset from a database timestamp read between `sent` and `received`."""
    global _offset
    _offset = database_time - (sent + (received - sent) / 2)


def offset() -> timedelta:
    return _offset
