"""One engine write transaction at a time per SQLite database, across threads and processes.

SQLite lets one writer in at a time, and a writer that finds the database locked sleeps in
SQLite's busy handler for whole milliseconds (1, 2, 5, 10 ms...) before it tries again. The
threads of one process take turns on a lock instead, and the processes on a file lock beside
the database (flock), both handed over the moment the holder is done: with several web
processes and workers on one file, writers queue instead of sleeping. PostgreSQL locks rows,
and needs none of this.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

_lock = threading.RLock()
_depth = 0  # how deep this process's holder is nested; guarded by _lock
_lock_files: dict[tuple[int, str], int] = {}  # (pid, database) -> this process's descriptor


@contextmanager
def serialized() -> Iterator[None]:
    # Inside a caller's transaction this thread may hold SQLite's lock already: taking ours
    # then could wait on a thread that waits on SQLite for us.
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        yield
        return
    global _depth
    with _lock:
        outermost = _depth == 0
        _depth += 1
        descriptor = _lock_file(str(connection.settings_dict["NAME"])) if outermost else -1
        try:
            if descriptor >= 0:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            if descriptor >= 0:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
            _depth -= 1


def _lock_file(database: str) -> int:
    """This process's own descriptor (a forked child must not share its parent's, or both
    would hold the lock at once); -1 for an in-memory database."""
    if database == ":memory:" or database.startswith("file:"):
        return -1
    key = (os.getpid(), database)
    if key not in _lock_files:
        _lock_files[key] = os.open(f"{database}-writelock", os.O_RDWR | os.O_CREAT, 0o600)
    return _lock_files[key]
