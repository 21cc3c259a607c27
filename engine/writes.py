"""One engine write transaction at a time per process, on SQLite.

SQLite lets one writer in at a time, and a writer that finds the database locked sleeps in
SQLite's busy handler for whole milliseconds (1, 2, 5, 10 ms...) before it tries again. The
threads of one process take turns on this lock instead, handed over at once, so only other
processes ever wait in the busy handler. PostgreSQL locks rows, and needs none of this.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

_lock = threading.RLock()


@contextmanager
def serialized() -> Iterator[None]:
    # Inside a caller's transaction this thread may hold SQLite's lock already: taking ours
    # then could wait on a thread that waits on SQLite for us.
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        yield
        return
    with _lock:
        yield
