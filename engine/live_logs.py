"""A running attempt's log lines reach its row about every FLUSH_SECONDS, so the dashboard and
the API show what a long step body is doing before it ends; the attempt's end still writes
them all, with its status.

One daemon thread per process, running while some body that wrote is still running, does the
writes on a database connection of its own (never inside the body's own transaction), and
only for captures older than FLUSH_SECONDS with new lines: a step that ends sooner costs
nothing more. A write only touches a `running` attempt, so a late one never overwrites what
the attempt's end wrote."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import DatabaseError, connections

if TYPE_CHECKING:
    from engine.attempt_logs import AttemptLog

FLUSH_SECONDS = 1.0

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_watched: dict[AttemptLog, Watch] = {}
_thread: threading.Thread | None = None


@dataclass(kw_only=True)
class Watch:
    attempt_id: int
    since: float
    written: int = 0  # lines already on the row


def watch(log: AttemptLog, attempt_id: int) -> None:
    """From the capture's first line until its body ends (`forget`)."""
    global _thread
    with _lock:
        _watched[log] = Watch(attempt_id=attempt_id, since=time.monotonic())
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="ploy-live-logs", daemon=True)
            _thread.start()


def forget(log: AttemptLog) -> None:
    with _lock:
        _watched.pop(log, None)


def flush(*, older_than: float | None = None) -> int:
    """Write the new lines of every capture watched for `older_than` seconds (FLUSH_SECONDS)
    or more; how many attempt rows were written."""
    from engine.models import Attempt, AttemptStatus

    older_than = FLUSH_SECONDS if older_than is None else older_than
    now = time.monotonic()
    with _lock:
        due = [(log, w) for log, w in _watched.items() if now - w.since >= older_than]
    updated = 0
    for log, watched in due:
        count, lines = log.so_far()
        if count == watched.written:
            continue
        running = Attempt.objects.filter(id=watched.attempt_id, status=AttemptStatus.RUNNING)
        updated += running.update(logs=lines)
        watched.written = count
    return updated


def _run() -> None:
    global _thread
    while True:
        time.sleep(FLUSH_SECONDS)
        with _lock:
            if not _watched:
                _thread = None  # the next capture that writes starts another
                return
        try:
            flush()
        except DatabaseError as error:  # the attempt's end writes its lines anyway
            logger.debug("live logs: cannot write now: %s", error)
        except Exception:  # never the end of the thread: the next round tries again
            logger.exception("live logs: a round failed")
        finally:
            connections["default"].close()  # held only while a round writes
