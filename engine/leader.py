"""The leader's duties, on a thread and a database connection of their own.

The oldest live worker leads: it declares workers silent for PLOY_WORKER_TIMEOUT_SECONDS dead,
frees what they held and queues it ahead of new work, and it alone runs the sweep for lost queue
messages and fires the schedules' ticks (engine.schedules). None of this runs on the heartbeat's
thread: a duty that waits (a row lock, a sweep over thousands of executions on a loaded
database) must not make the leader's own heartbeats late, or the others would declare a live
leader dead and run its steps a second time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import cast

from django.conf import settings
from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.functions import Now

from engine import clock, counts
from engine.models import Execution, Worker, WorkerStatus
from engine.workers import (
    DEAD_ROWS_KEPT,
    LIVE_STATUSES,
    WorkerProcess,
    heartbeat_seconds,
    release_owned_by,
    repeat_until_stopped,
    timeout,
)

logger = logging.getLogger(__name__)

# On stop, a duty under way gets this long to end before its statement is cancelled: the next
# leader does whatever it left undone (every duty is idempotent).
STOP_GRACE_SECONDS = 1.0


def is_leader(worker: WorkerProcess) -> bool:
    """The oldest worker that heartbeated in the last few beats leads, so a dead leader is
    replaced within seconds; two leaders for a moment are harmless (all they do is
    idempotent)."""
    recently = timedelta(seconds=min(settings.PLOY_WORKER_TIMEOUT_SECONDS, 3 * heartbeat_seconds()))
    oldest = (
        Worker.objects.filter(status=WorkerStatus.ALIVE, threads__gt=0)
        .filter(last_seen_at__gte=clock.now() - recently)
        .values_list("id", flat=True)
        .first()
    )
    return oldest == worker.id


def reap(leader: WorkerProcess) -> int:
    """Declare silent workers dead and free every execution held by a worker that is not live;
    how many workers were declared dead. Never the leader itself: its heartbeat runs on another
    thread, so however long this takes says nothing about whether it is alive."""
    cutoff = clock.now() - timeout()
    silent = Worker.objects.filter(status__in=LIVE_STATUSES, last_seen_at__lt=cutoff).exclude(
        id=leader.id
    )
    candidates = list(silent.values_list("id", flat=True))
    # Conditional on the row at the moment of the write: one that heartbeated since the read
    # above is alive and stays so.
    declared = silent.filter(id__in=candidates).update(status=WorkerStatus.DEAD, stopped_at=Now())
    if declared:
        dead = Worker.objects.filter(id__in=candidates, status=WorkerStatus.DEAD)
        names = ", ".join(dead.values_list("id", flat=True))
        logger.warning("worker(s) %s stopped heartbeating: declared dead", names)
    live = Worker.objects.filter(status__in=LIVE_STATUSES).values("id")
    orphans = Execution.objects.running().filter(owner__isnull=False).exclude(owner__in=live)
    owners = orphans.values_list("owner", flat=True).order_by().distinct()
    release_owned_by(cast(list[str], list(owners)))
    return declared


def prune_dead() -> None:
    Worker.objects.filter(
        status=WorkerStatus.DEAD, last_seen_at__lt=clock.now() - DEAD_ROWS_KEPT
    ).delete()


class Duties:
    """A worker's periodic work besides its heartbeat, one duty at a time on a thread (so a
    database connection) of its own: handing over claims that a failed write left behind, and
    the leader's duties while this worker is the oldest. A slow duty delays only the next one."""

    def __init__(self, worker: WorkerProcess) -> None:
        self._worker = worker
        self._stopped = threading.Event()
        self._next_sweep = 0.0
        self._database: BaseDatabaseWrapper | None = None
        self._thread = threading.Thread(target=self._run, name="ploy-duties", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the duty under way; one still waiting (on a row lock, say) after a moment
        has its statement cancelled, so that stopping the worker is never held up by it."""
        self._stopped.set()
        self._thread.join(timeout=STOP_GRACE_SECONDS)
        if self._thread.is_alive():
            self._cancel_statement()
            self._thread.join(timeout=10)

    def _cancel_statement(self) -> None:
        database = self._database
        raw = database.connection if database is not None else None
        if database is None or raw is None:
            return
        try:
            with database.wrap_database_errors:
                if database.vendor == "postgresql":
                    raw.cancel_safe(timeout=5)
                elif database.vendor == "sqlite":
                    raw.interrupt()
        except DatabaseError as error:  # closed meanwhile: nothing left to cancel
            logger.debug("duties: nothing to cancel: %s", error)

    def _run(self) -> None:
        self._database = connections["default"]  # this thread's own connection
        repeat_until_stopped(self.tick, self._stopped, "worker duties")

    def tick(self) -> None:
        worker = self._worker
        worker.retry_releases()
        # A worker whose own heartbeat is failing may be declared dead any moment: not a leader.
        if worker.threads and worker.is_healthy and is_leader(worker):
            self.lead()

    def lead(self) -> None:
        duties: tuple[Callable[[], None], ...] = (self._reap, self._sweep, self._tick_schedules)
        for duty in duties:
            if self._stopped.is_set():
                return
            duty()

    def _reap(self) -> None:
        from engine.runtime import sweep

        if reap(self._worker):
            # A dead worker may have taken a message off the queue and died before claiming
            # its execution: look for what is overdue by the timeout, now, not at the next sweep.
            sweep(grace=timeout() - timedelta(seconds=heartbeat_seconds()))

    def _sweep(self) -> None:
        from engine.runtime import sweep

        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + settings.PLOY_SWEEP_SECONDS
            sweep()
            prune_dead()
            counts.prune()

    def _tick_schedules(self) -> None:
        from engine import schedules

        try:
            schedules.tick()
        except DatabaseError as error:  # the schedules stay due: the next round fires them
            logger.warning("schedules: cannot tick now: %s", error)
