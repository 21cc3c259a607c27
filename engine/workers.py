"""Worker processes: registration, heartbeats, and handing over the executions they held.

Each worker process is a `Worker` row whose `last_seen_at` it stamps with the database's clock
about every second: one write per process, however many executions it runs, on a thread that
does nothing else. The oldest live worker leads (engine.leader): it declares workers silent for
PLOY_WORKER_TIMEOUT_SECONDS dead and frees what they held, on a thread of its own.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from engine import clock
from engine.claims import Claim, EngineUnavailable
from engine.models import Execution, Worker, WorkerStatus

if TYPE_CHECKING:
    from engine.leader import Duties

logger = logging.getLogger(__name__)

# Released executions jump the queue: recovery must not wait behind a backlog of new work.
RELEASED_PRIORITY = 100
LIVE_STATUSES = (WorkerStatus.ALIVE, WorkerStatus.STOPPING)
# After an engine error, the execution is tried again this much later.
ENGINE_ERROR_RETRY_SECONDS = 1.0
DEAD_ROWS_KEPT = timedelta(hours=1)


def timeout() -> timedelta:
    return timedelta(seconds=settings.PLOY_WORKER_TIMEOUT_SECONDS)


def heartbeat_seconds() -> float:
    return min(1.0, settings.PLOY_WORKER_TIMEOUT_SECONDS / 5)


class WorkerProcess:
    """This process as a worker: its id, the claims it holds, and whether it is stopping."""

    def __init__(self) -> None:
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = self._new_id()
        self.threads = 0
        self.stopping = threading.Event()
        self._held: dict[uuid.UUID, Claim] = {}
        self._to_release: dict[uuid.UUID, Claim] = {}
        # Claims under way, and claims whose outcome a failed write left unknown (see
        # `claiming`): counted per execution, as two threads may take messages for one.
        self._claiming: Counter[uuid.UUID] = Counter()
        self._unsure: set[uuid.UUID] = set()
        self._lock = threading.Lock()
        self._heartbeat: Heartbeat | None = None
        self._duties: Duties | None = None
        self._last_beat = time.monotonic()

    def _new_id(self) -> str:
        return f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, *, threads: int) -> None:
        """Register and heartbeat from now on (a `runhuey` process, or a `.run()` caller)."""
        if self._heartbeat is not None:
            return
        from engine.leader import Duties

        self.threads = threads
        register(self)
        if threads:
            from engine import registry, schedules

            schedules.loaded_at(registry.current().config)  # its age, should it lead
        self._last_beat = time.monotonic()
        self._heartbeat = Heartbeat(self)
        self._heartbeat.start()
        self._duties = Duties(self)
        self._duties.start()
        atexit.register(self.stop)

    @property
    def is_started(self) -> bool:
        return self._heartbeat is not None

    def begin_stopping(self) -> None:
        """No new step bodies from now on: each run hands its execution over at its next step."""
        if not self.stopping.is_set():
            self.stopping.set()
            on_a_live_connection(
                lambda: Worker.objects.filter(id=self.id, status=WorkerStatus.ALIVE).update(
                    status=WorkerStatus.STOPPING
                )
            )

    def stop(self) -> None:
        """Sign off. A step body still running (past the shutdown timeout, or after a second
        signal) keeps its execution: freeing it now would let another worker run the same step
        while this process is still inside it, so the leader frees it once the heartbeats have
        stopped for the timeout, as after a crash."""
        if self._heartbeat is None:
            return
        self.stopping.set()
        if self._duties is not None:
            self._duties.stop()
            self._duties = None
        self._heartbeat.stop()
        self._heartbeat = None
        self.retry_releases()
        with self._lock:
            still_running = list(self._held)
        if still_running:
            logger.warning(
                "worker %s stops with %d step(s) still running; they resume elsewhere after "
                "the worker timeout",
                self.id,
                len(still_running),
            )
            return
        try:
            on_a_live_connection(
                lambda: Worker.objects.filter(id=self.id).update(
                    status=WorkerStatus.DEAD, stopped_at=Now(), last_seen_at=Now()
                )
            )
        except DatabaseError as error:  # the leader declares it dead after the timeout
            logger.warning("worker %s: cannot sign off (%s)", self.id, error)

    # -- claims ------------------------------------------------------------------------------

    def hold(self, execution: Execution) -> Claim:
        """This process runs the execution it claimed (or created owned): its claim, kept."""
        claim = Claim.of(execution)
        with self._lock:
            self._held[claim.execution_id] = claim
        return claim

    def forget(self, claim: Claim) -> None:
        with self._lock:
            self._held.pop(claim.execution_id, None)

    @contextmanager
    def claiming(self, execution_id: uuid.UUID) -> Iterator[None]:
        """Around a claim and its `hold`: while under way, no other thread takes the execution
        for an unsure claim of this worker's."""
        with self._lock:
            self._claiming[execution_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._claiming[execution_id] -= 1
                if not self._claiming[execution_id]:
                    del self._claiming[execution_id]

    def release_if_claimed(self, execution_id: uuid.UUID) -> None:
        """A claim failed with the database's error, and its UPDATE may have committed all the
        same (the connection cut before the answer or the read-back): if this worker owns the
        execution without running it, no one else would ever free it, so hand it over as soon
        as the database answers."""
        with self._lock:
            self._unsure.add(execution_id)
        self.retry_releases()

    def release_later(self, claim: Claim) -> None:
        """The database failed under a run: hand the execution over as soon as it answers."""
        with self._lock:
            self._held.pop(claim.execution_id, None)
            self._to_release[claim.execution_id] = claim
        self.retry_releases()

    def retry_releases(self) -> None:
        with self._lock:
            pending = list(self._to_release.values())
        for claim in pending:
            try:
                release_claim(claim, retry_in=ENGINE_ERROR_RETRY_SECONDS)
            except DatabaseError as error:
                logger.warning("execution %s: cannot release it yet: %s", claim.execution_id, error)
                continue
            with self._lock:
                self._to_release.pop(claim.execution_id, None)
        with self._lock:
            unsure = list(self._unsure)
        for execution_id in unsure:
            try:
                self._release_unsure(execution_id)
            except DatabaseError as error:
                logger.warning("execution %s: cannot check its claim yet: %s", execution_id, error)
                continue
            with self._lock:
                self._unsure.discard(execution_id)

    def _release_unsure(self, execution_id: uuid.UUID) -> None:
        owned = Execution.objects.running().filter(id=execution_id, owner=self.id)
        epoch = owned.values_list("run_count", flat=True).first()
        with self._lock:
            busy = execution_id in self._held or execution_id in self._claiming
        # Held or being claimed by another of its threads: that run owns it, and a claim of
        # its after the read above changed the epoch, which fences the release below.
        if epoch is not None and not busy:
            claim = Claim(execution_id=execution_id, owner=self.id, epoch=epoch)
            release_claim(claim, retry_in=ENGINE_ERROR_RETRY_SECONDS)
            logger.warning("execution %s: released a claim its error left behind", execution_id)

    def running(self) -> list[str]:
        with self._lock:
            return [str(execution_id) for execution_id in self._held]

    @property
    def is_healthy(self) -> bool:
        """False while this worker could not heartbeat for the timeout (it may be declared dead)."""
        silent = time.monotonic() - self._last_beat
        return self._heartbeat is None or silent <= settings.PLOY_WORKER_TIMEOUT_SECONDS

    def check_can_commit(self) -> None:
        silent = time.monotonic() - self._last_beat
        if not self.is_healthy:
            raise EngineUnavailable(f"no heartbeat for {silent:.1f} s: not committing")

    def beat_succeeded(self) -> None:
        self._last_beat = time.monotonic()

    def reregister(self) -> None:
        """Declared dead while alive (frozen, cut off): carry on as a new worker."""
        old, self.id = self.id, self._new_id()
        logger.error("worker %s was declared dead; its runs are fenced; now %s", old, self.id)
        register(self)


_current: WorkerProcess | None = None
_current_lock = threading.Lock()


def current() -> WorkerProcess:
    """This process's worker (a forked child gets its own)."""
    global _current
    with _current_lock:
        if _current is None or _current.pid != os.getpid():
            _current = WorkerProcess()
        return _current


def register(worker: WorkerProcess) -> None:
    """Insert the worker's row; a live row with this host and pid is a predecessor that died."""
    Worker.objects.create(
        id=worker.id,
        host=worker.host,
        pid=worker.pid,
        threads=worker.threads,
        status=WorkerStatus.ALIVE,
        started_at=Now(),
        last_seen_at=Now(),
    )
    beat(worker)  # measures the database's clock before the first claim
    predecessors = Worker.objects.filter(
        host=worker.host, pid=worker.pid, status__in=LIVE_STATUSES
    ).exclude(id=worker.id)
    declare_dead(list(predecessors.values_list("id", flat=True)))
    logger.info("worker %s started with %d thread(s)", worker.id, worker.threads)


def beat(worker: WorkerProcess) -> bool:
    """Stamp the heartbeat with the database's clock; False once declared dead."""
    if connection.vendor != "postgresql":
        return bool(
            Worker.objects.filter(id=worker.id, status__in=LIVE_STATUSES).update(last_seen_at=Now())
        )
    sent = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE engine_worker SET last_seen_at = statement_timestamp() "
            "WHERE id = %s AND status IN ('alive', 'stopping') RETURNING last_seen_at",
            [worker.id],
        )
        row = cursor.fetchone()
    if row:
        clock.observe(row[0], sent, timezone.now())
    return row is not None


def declare_dead(worker_ids: list[str]) -> None:
    if not worker_ids:
        return
    Worker.objects.filter(id__in=worker_ids, status__in=LIVE_STATUSES).update(
        status=WorkerStatus.DEAD, stopped_at=Now()
    )
    logger.warning("worker(s) %s stopped heartbeating: declared dead", ", ".join(worker_ids))
    release_owned_by(worker_ids)


def release_owned_by(owners: list[str]) -> int:
    """Free the running executions of these owners and queue them ahead of new work.

    One whose row is locked is left for the next round (PostgreSQL's SKIP LOCKED): a frozen
    worker still inside a step's transaction holds its execution's row, and waiting for it
    would hold up everything else the leader frees meanwhile."""
    if not owners:
        return 0
    from engine.runtime import enqueue

    held = Execution.objects.running().filter(owner__in=owners)
    with transaction.atomic():
        ids = list(held.select_for_update(skip_locked=True).values_list("id", flat=True))
        held.filter(id__in=ids).update(owner=None)
    for execution_id in ids:
        enqueue(execution_id, priority=RELEASED_PRIORITY)
    if ids:
        logger.warning("released %d execution(s) of worker(s) %s", len(ids), ", ".join(owners))
    return len(ids)


def release_claim(claim: Claim, *, retry_in: float = 0) -> None:
    """Hand one execution over: unowned, due as it was, queued ahead of new work (or, after an
    engine error, again in `retry_in` seconds, so a failing database is not retried in a loop)."""
    from engine.runtime import enqueue

    if claim.owned.update(owner=None):
        if retry_in:
            enqueue(claim.execution_id, at=clock.now() + timedelta(seconds=retry_in))
        else:
            enqueue(claim.execution_id, priority=RELEASED_PRIORITY)


def on_a_live_connection(write: Callable[[], object]) -> None:
    """Run `write`, once more on a new connection if this thread's failed: a worker's main
    thread writes only when it starts and stops, and in between the database may have closed
    that connection (a restart, an idle timeout, an administrator's terminate)."""
    try:
        write()
    except DatabaseError:
        if connection.in_atomic_block:
            raise
        connection.close()
        write()


def repeat_until_stopped(tick: Callable[[], None], stopped: threading.Event, what: str) -> None:
    """Run `tick` every heartbeat interval on this thread's own connection until `stopped`.
    A failure (the database's errors) is tried again next time, and logged the 1st and 10th
    time in a row, then every 60th, so an outage does not flood the log."""
    failures = 0
    try:
        while not stopped.wait(heartbeat_seconds()):
            try:
                tick()
                failures = 0
            except Exception as error:
                if stopped.is_set():
                    break  # stopping: the error may be the cancelled statement
                failures += 1
                if failures in (1, 10) or failures % 60 == 0:
                    logger.warning("%s failed (%d in a row): %s", what, failures, error)
                connection.close()
    finally:
        connection.close()


class Heartbeat:
    """The thread that keeps a worker alive: one write a beat and nothing else, so that no other
    work of the process (the leader's duties above all) can make a beat late."""

    def __init__(self, worker: WorkerProcess) -> None:
        self._worker = worker
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ploy-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        repeat_until_stopped(self.tick, self._stopped, "heartbeat")

    def tick(self) -> None:
        worker = self._worker
        if not beat(worker):
            worker.reregister()
        worker.beat_succeeded()
