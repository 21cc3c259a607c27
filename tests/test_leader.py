"""The leader's duties run beside its heartbeat, never in its way: a leader stuck in a duty (a
locked queue file on SQLite) for longer than the worker timeout is still alive to everyone, no
step runs twice, and the duty finishes once the lock is gone. On PostgreSQL it never waits for
a locked execution: it frees the others, and that one once the lock is gone.

Real `manage.py runhuey` processes; step bodies mark their runs in files
(tests/workflows/faults.py). The PostgreSQL tests are skipped where 127.0.0.1:5432 is not
reachable; their queue is the SQLite file of the test session (no Redis)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Protocol

import pytest
from django.conf import settings
from django.utils import timezone

from engine.leader import reap
from engine.models import Execution, WorkerStatus
from engine.models import Worker as WorkerRow
from engine.workers import WorkerProcess
from tests.conftest import Worker, wait_for
from tests.test_faults import DjangoStore
from tests.test_faults_scaleout import PostgresStore, fresh_database, reachable
from tests.workflows.faults import starts

TIMEOUT = 2.0  # PLOY_WORKER_TIMEOUT_SECONDS in tests/settings.py
# The busy executions' long step outlasts the whole blocked spell (kill, reap, twice the
# timeout), so a worker wrongly declared dead would have its step run a second time.
BUSY_SECONDS = 15
# The sweep re-queues what an enqueue into the locked SQLite queue could not.
ENVIRONMENT = {"PLOY_SWEEP_SECONDS": "3"}

postgres = pytest.mark.skipif(
    not reachable(5432), reason="PostgreSQL is not reachable on 127.0.0.1:5432"
)


class Backend(Protocol):
    """What the scenario needs of a database, and the lock that stalls the leader on it."""

    env: dict[str, str]

    def trigger(self, binding: str, input: object) -> str: ...

    def running_count(self) -> int: ...

    def workers(self) -> dict[str, tuple[str, datetime]]:
        """Each worker row: id -> (status, last_seen_at)."""

    def now(self) -> datetime:
        """The database's clock."""

    def hold(self, execution_id: str) -> None:
        """Take the lock that the leader's freeing of `execution_id` must wait for."""

    def is_waited_on(self) -> bool:
        """The leader is stuck behind the lock."""

    def release(self) -> None: ...


class PostgresBackend(PostgresStore):
    """A row lock: SELECT ... FOR UPDATE on the execution, in a transaction left open."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self._locker: object = None

    def workers(self) -> dict[str, tuple[str, datetime]]:
        rows = self.rows("SELECT id, status, last_seen_at FROM engine_worker")
        return {id: (status, seen) for id, status, seen in rows}

    def now(self) -> datetime:
        return self.rows("SELECT statement_timestamp()")[0][0]

    def hold(self, execution_id: str) -> None:
        import psycopg

        self._locker = locker = psycopg.connect(self.env["DATABASE_URL"])
        locker.execute(
            "SELECT id FROM engine_execution WHERE id = %s::uuid FOR UPDATE", [execution_id]
        )

    def hold_worker(self, worker_id: str) -> None:
        """Lock a worker's row: the leader's declaring it dead waits for it."""
        import psycopg

        self._locker = locker = psycopg.connect(self.env["DATABASE_URL"])
        locker.execute("SELECT id FROM engine_worker WHERE id = %s FOR UPDATE", [worker_id])

    def is_waited_on(self, table: str = "engine_execution") -> bool:
        waiting = self.rows(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE %s",
            f'UPDATE "{table}"%%',
        )
        return waiting[0][0] > 0

    def owner(self, execution_id: str) -> str | None:
        return self.rows("SELECT owner FROM engine_execution WHERE id = %s::uuid", execution_id)[0][
            0
        ]

    def release(self) -> None:
        if self._locker is not None:
            self._locker.rollback()
            self._locker.close()
            self._locker = None


class SqliteBackend(DjangoStore):
    """SQLite has no row locks, and its database lock would stop every heartbeat too; the
    queue is another file: its write lock (BEGIN IMMEDIATE) holds up the leader's enqueue of
    the freed execution for Huey's busy timeout (5 s), while heartbeats write the database."""

    env: dict[str, str] = {}

    def __init__(self) -> None:
        self._locker: sqlite3.Connection | None = None
        self._held: str | None = None

    def running_count(self) -> int:
        return Execution.objects.running().count()

    def workers(self) -> dict[str, tuple[str, datetime]]:
        rows = WorkerRow.objects.values_list("id", "status", "last_seen_at")
        return {id: (status, seen) for id, status, seen in rows}

    def now(self) -> datetime:
        return timezone.now()

    def hold(self, execution_id: str) -> None:
        self._held = execution_id
        self._locker = sqlite3.connect(settings.HUEY["filename"], isolation_level=None)
        self._locker.execute("BEGIN IMMEDIATE")

    def is_waited_on(self) -> bool:
        # Freed in the database: the leader's next write is the enqueue, into the locked file.
        return Execution.objects.filter(id=self._held, owner__isnull=True).exists()

    def release(self) -> None:
        if self._locker is not None:
            self._locker.rollback()
            self._locker.close()
            self._locker = None


@pytest.fixture
def postgres_backend() -> Iterator[PostgresBackend]:
    with fresh_database({}) as url:
        backend = PostgresBackend({"DATABASE_URL": url})
        try:
            yield backend
        finally:
            backend.release()
            backend.close()


@pytest.fixture
def sqlite_backend() -> Iterator[SqliteBackend]:
    backend = SqliteBackend()
    yield backend
    backend.release()


def held_by_a_killed_worker(
    start_worker: Callable[..., Worker], backend: Backend
) -> tuple[Worker, str]:
    """A worker that leads and runs a long step, to be killed: the next leader must free it."""
    doomed = start_worker(threads=1, **backend.env, **ENVIRONMENT)
    held = backend.trigger("FAULT_HOLD", {"seconds": [60, 0]})
    wait_for(lambda: starts(held, "long"))
    return doomed, held


def blocked_leader_keeps_heartbeating(
    start_worker: Callable[..., Worker], backend: Backend
) -> None:
    doomed, held = held_by_a_killed_worker(start_worker, backend)
    survivors = [start_worker(threads=2, **backend.env, **ENVIRONMENT) for _ in range(2)]
    busy = [backend.trigger("FAULT_HOLD", {"seconds": [BUSY_SECONDS]}) for _ in range(4)]
    wait_for(lambda: all(starts(execution_id, "long") for execution_id in busy))

    backend.hold(held)
    try:
        doomed.kill()  # the oldest survivor leads now: it must free `held`, and waits
        wait_for(backend.is_waited_on, timeout=30)
        stuck_since = backend.now()
        # Every survivor heartbeats on, for twice the timeout, while its leader waits.
        ids = [survivor.worker_id for survivor in survivors]

        def every_survivor_beat_long_after_its_leader_got_stuck() -> bool:
            long_after = stuck_since + timedelta(seconds=2 * TIMEOUT)
            return all(backend.workers()[id][1] > long_after for id in ids)

        wait_for(every_survivor_beat_long_after_its_leader_got_stuck, timeout=30)
        assert all(backend.workers()[id][0] == WorkerStatus.ALIVE for id in ids)
    finally:
        backend.release()

    wait_for(lambda: backend.running_count() == 0, timeout=60, interval=0.2)
    workers = backend.workers()
    assert workers[doomed.worker_id][0] == WorkerStatus.DEAD
    for survivor in survivors:
        assert len(survivor.worker_ids) == 1  # never declared dead, never registered again
        assert workers[survivor.worker_id][0] == WorkerStatus.ALIVE
        assert "was declared dead" not in survivor.log.read_text()
    for execution_id in busy:
        assert [len(starts(execution_id, step)) for step in ("first", "long", "last")] == [1] * 3
    # The killed worker's step runs again, once, after the lock is gone.
    assert [len(starts(held, step)) for step in ("first", "long", "last")] == [1, 2, 1]


@postgres
def test_a_locked_execution_of_a_dead_worker_holds_up_none_of_the_others_on_postgres(
    start_worker, postgres_backend
):
    """As a worker frozen inside a step's transaction holds its execution's row: the leader
    frees the dead worker's other execution at once, and the locked one once the lock is gone,
    never waiting for it."""
    backend = postgres_backend
    doomed = start_worker(threads=2, **backend.env, **ENVIRONMENT)
    locked, other = (backend.trigger("FAULT_HOLD", {"seconds": [60, 0]}) for _ in range(2))
    wait_for(lambda: starts(locked, "long") and starts(other, "long"))
    survivors = [start_worker(threads=2, **backend.env, **ENVIRONMENT) for _ in range(2)]

    backend.hold(locked)
    try:
        doomed.kill()
        killed_at = backend.now()
        wait_for(lambda: len(starts(other, "long")) == 2, timeout=30)
        assert backend.owner(locked) == doomed.worker_id  # skipped, not waited for
        assert not backend.is_waited_on()
        # Every survivor heartbeats on meanwhile, and the leader keeps coming back to it.
        ids = [survivor.worker_id for survivor in survivors]
        wait_for(
            lambda: all(
                backend.workers()[id][1] > killed_at + timedelta(seconds=2 * TIMEOUT) for id in ids
            ),
            timeout=30,
        )
        assert backend.owner(locked) == doomed.worker_id
    finally:
        backend.release()

    wait_for(lambda: backend.running_count() == 0, timeout=60, interval=0.2)
    assert backend.workers()[doomed.worker_id][0] == WorkerStatus.DEAD
    for survivor in survivors:
        assert len(survivor.worker_ids) == 1  # never declared dead, never registered again
        assert "worker duties failed" not in survivor.log.read_text()
    for execution_id in (locked, other):
        assert [len(starts(execution_id, step)) for step in ("first", "long", "last")] == [1, 2, 1]


@pytest.mark.django_db(transaction=True)
def test_a_leader_waiting_on_the_queue_file_keeps_heartbeating_on_sqlite(
    start_worker, sqlite_backend
):
    blocked_leader_keeps_heartbeating(start_worker, sqlite_backend)


@postgres
def test_a_leader_waiting_on_a_row_lock_stops_gracefully_on_sigterm(start_worker, postgres_backend):
    """The waiting statement is cancelled: the worker signs off as dead, with nothing left."""
    backend = postgres_backend
    doomed, _held = held_by_a_killed_worker(start_worker, backend)
    leader = start_worker(threads=1, **backend.env, **ENVIRONMENT)
    backend.hold_worker(doomed.worker_id)  # declaring it dead waits
    doomed.kill()
    wait_for(lambda: backend.is_waited_on("engine_worker"), timeout=30)

    leader.terminate()
    assert leader.process.wait(timeout=30) == 0
    assert not backend.is_waited_on("engine_worker")
    assert backend.workers()[leader.worker_id][0] == WorkerStatus.DEAD
    log = leader.log.read_text()
    assert f"worker {leader.worker_id} stopped" in log
    assert "worker duties failed" not in log
    assert "Traceback" not in log, log[-3000:]


# --- who is declared dead ----------------------------------------------------------------------


def make_worker(name: str, seconds_ago: float) -> WorkerRow:
    seen = timezone.now() - timedelta(seconds=seconds_ago)
    return WorkerRow.objects.create(
        id=f"host:{name}",
        host="host",
        pid=1,
        threads=1,
        status=WorkerStatus.ALIVE,
        started_at=seen,
        last_seen_at=seen,
    )


@pytest.mark.django_db
def test_the_leader_never_declares_itself_dead():
    """Its heartbeat is another thread's: a slow duty (its own row looks old to a reap that
    began before the last beat) says nothing about whether it is alive."""
    leader = WorkerProcess()
    leader.id = make_worker("leader", 10 * TIMEOUT).id
    make_worker("silent", 10 * TIMEOUT)
    make_worker("alive", 0)
    assert reap(leader) == 1
    statuses = dict(WorkerRow.objects.values_list("id", "status"))
    assert statuses == {
        "host:leader": WorkerStatus.ALIVE,
        "host:silent": WorkerStatus.DEAD,
        "host:alive": WorkerStatus.ALIVE,
    }
