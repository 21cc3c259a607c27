"""kill -9 around `step.transaction`, with real `manage.py runhuey` processes: the ledger's two
entries land exactly once, every time, wherever the worker died.

Each round starts one `ledger` execution (tests/workflows/transactions.py) and kills the
process group of the worker running it: at a chosen point (before the step, at the start of
its transaction, between its writes, just before its commit, after it), with the binding's
transaction committed but the engine's record of it held back (the test holds Django's
database lock), or at a random moment; or it freezes the worker inside the transaction and
thaws it once another worker runs the step again (a zombie whose late commit must not count).
A second worker takes the execution over. Back ends:
the `env.DB` binding on SQLite, Django's own database on SQLite, the binding on PostgreSQL,
and Django's own database on PostgreSQL with Redis; the last two are skipped, with
the reason, where the servers are not reachable."""

from __future__ import annotations

import json
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from engine import runtime
from engine.bindings import current_env
from engine.transactions import OUTPUTS_TABLE
from tests.conftest import (
    ROOT,
    Worker,
    drop_postgres,
    migrated_postgres,
    redis_url,
    wait_for,
)
from tests.test_db_postgres import fresh_postgres, reachable
from tests.test_transaction_steps import postgres_migrations
from tests.workflows.transactions import CREATE_LEDGER, LEDGER_TABLE, go_on, notes, pause_at

pytestmark = pytest.mark.django_db(transaction=True)

SEED = 20261202
REDIS = redis_url()  # this process's own queue: see tests/conftest.py
ROUND_TIMEOUT = 60.0
needs_postgres = pytest.mark.skipif(
    not reachable(5432), reason="PostgreSQL is not reachable on 127.0.0.1:5432"
)
needs_redis = pytest.mark.skipif(
    not reachable(6379), reason="Redis is not reachable on 127.0.0.1:6379"
)


# --- what each back end reads and writes ------------------------------------------------------


@dataclass(kw_only=True)
class Backend:
    """Where the engine's rows and the ledger live, and how the test reads them."""

    db: str | None  # the `db=` of the step: "DB" or None (Django's own database)
    environment: dict[str, str]
    engine_rows: Callable[[str, tuple], list[tuple]]  # SQL with %s on Django's database
    ledger_rows: Callable[[str, tuple], list[tuple]]  # SQL with %s where the ledger is
    trigger: Callable[[dict], str]
    engine_lock: Callable[[str], AbstractContextManager[None]] | None = None
    # An execution id as the engine's tables hold it (SQLite: 32 hex digits, no dashes).
    engine_id: Callable[[str], object] = str

    def status(self, execution_id: str) -> str:
        sql = "SELECT status FROM engine_execution WHERE id = %s"
        rows = self.engine_rows(sql, (self.engine_id(execution_id),))
        return rows[0][0] if rows else ""

    def owner(self, execution_id: str) -> str | None:
        sql = "SELECT owner FROM engine_execution WHERE id = %s"
        rows = self.engine_rows(sql, (self.engine_id(execution_id),))
        return rows[0][0] if rows else None

    def write_step(self, execution_id: str) -> tuple[str, object, list[tuple[int, str]]]:
        (step_id, status, output) = self.engine_rows(
            "SELECT id, status, output FROM engine_step WHERE execution_id = %s AND name = %s",
            (self.engine_id(execution_id), "write"),
        )[0]
        attempts = self.engine_rows(
            "SELECT number, status FROM engine_attempt WHERE step_id = %s ORDER BY number",
            (step_id,),
        )
        return status, json.loads(output) if isinstance(output, str) else output, attempts

    def entries(self, execution_id: str) -> list[tuple[str, int]]:
        rows = self.ledger_rows(
            f"SELECT entry, pid FROM {LEDGER_TABLE} WHERE execution_id = %s ORDER BY entry",
            (execution_id,),
        )
        return [(entry, pid) for entry, pid in rows]

    def stored(self, execution_id: str) -> list[tuple[int, object]]:
        rows = self.ledger_rows(
            f"SELECT attempt, output FROM {OUTPUTS_TABLE} WHERE execution_id = %s",
            (execution_id,),
        )
        return [(attempt, json.loads(output)) for attempt, output in rows]


def django_rows(sql: str, params: tuple) -> list[tuple]:
    """The test's own Django database (the SQLite file the workers share)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [tuple(row) for row in cursor.fetchall()]


def sqlite_binding_rows(sql: str, params: tuple) -> list[tuple]:
    rows = current_env().DB.prepare(sql.replace("%s", "?")).bind(*params).all()["results"]
    return [tuple(row.values()) for row in rows]


def psycopg_rows(url: str) -> Callable[[str, tuple], list[tuple]]:
    opened = psycopg.connect(url, autocommit=True)

    def rows(sql: str, params: tuple) -> list[tuple]:
        return opened.execute(
            sql.replace("WHERE id = %s", "WHERE id = %s::uuid"), params
        ).fetchall()

    rows.close = opened.close  # type: ignore[attr-defined]
    return rows


@contextmanager
def sqlite_engine_lock(execution_id: str) -> Iterator[None]:
    """Django's SQLite database write-locked by this test: the engine's next write waits."""
    locker = sqlite3.connect(connection.settings_dict["NAME"], timeout=30, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        locker.execute("ROLLBACK")
        locker.close()


def orm_trigger(input: dict) -> str:
    return runtime.trigger("LEDGER", input).execution_id


@pytest.fixture
def sqlite_ledgers() -> None:
    with connection.cursor() as cursor:
        cursor.execute(CREATE_LEDGER)
    current_env().DB.exec(CREATE_LEDGER)


@pytest.fixture
def postgres_binding_backend(tmp_path: Path, sqlite_ledgers: None) -> Iterator[Backend]:
    """Django on the test's SQLite file; `DB: {url_env: ...}` on a fresh PostgreSQL database."""
    with fresh_postgres("ployweb_txfaults") as url:
        source = (ROOT / "tests" / "workflows" / "ploy.yaml").read_text()
        text = source.replace("main: app.py", f"main: {ROOT / 'tests' / 'workflows' / 'app.py'}")
        text = text.replace("  DB: default", "  DB: {url_env: LEDGER_DATABASE_URL}")
        (tmp_path / "ploy.yaml").write_text(text)
        postgres_migrations(tmp_path / "migrations")
        with psycopg.connect(url, autocommit=True) as setup:
            setup.execute(CREATE_LEDGER)
        ledger = psycopg_rows(url)
        yield Backend(
            db="DB",
            environment={"PLOY_CONFIG": str(tmp_path / "ploy.yaml"), "LEDGER_DATABASE_URL": url},
            engine_rows=django_rows,
            engine_id=lambda execution_id: uuid.UUID(execution_id).hex,
            ledger_rows=ledger,
            trigger=orm_trigger,
            engine_lock=sqlite_engine_lock,
        )
        ledger.close()


@pytest.fixture
def postgres_django_backend() -> Iterator[Backend]:
    """Django's own database on PostgreSQL, the queue on Redis (this process's db)."""
    import redis

    from tests.test_faults_scaleout import PostgresStore

    redis.Redis.from_url(REDIS).flushdb()
    url = migrated_postgres("ployweb_txfaults")
    try:
        environment = {"DATABASE_URL": url, "PLOY_QUEUE_URL": REDIS}
        with psycopg.connect(url, autocommit=True) as setup:
            setup.execute(CREATE_LEDGER)
        engine = psycopg_rows(url)
        store = PostgresStore(environment)
        yield Backend(
            db=None,
            environment=environment,
            engine_rows=engine,
            ledger_rows=engine,
            trigger=lambda input: store.trigger("LEDGER", input),
        )
        store.close()
        engine.close()
    finally:
        drop_postgres(url)
    redis.Redis.from_url(REDIS).flushdb()


# --- the rounds -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Point:
    """Where to kill: at the `time`-th pass through `point`, or (`point` empty) `at` seconds
    after the step before the transaction; `committed`: once the binding has committed,
    before the engine knows."""

    point: str = ""
    time: int = 1
    at: float = 0.0
    committed: bool = False
    frozen: bool = False  # SIGSTOP there, thawed once another worker runs the step again
    input: dict = field(default_factory=dict)

    def __str__(self) -> str:
        where = f"{self.point}@{self.time}" if self.point else f"+{self.at:.2f}s"
        flags = " committed" * self.committed + " frozen" * self.frozen
        return f"{where}{flags} {self.input}"


FAIL_FIRST = {"fail_first": True}
POINTS = [
    Point(point="before"),
    Point(point="begin"),
    Point(point="middle"),
    Point(point="end"),
    Point(point="after"),
    Point(point="middle", input=FAIL_FIRST),  # the attempt that would fail, killed first
    Point(point="begin", time=2, input=FAIL_FIRST),  # the retry, after a rolled-back attempt
    Point(point="middle", time=2, input=FAIL_FIRST),
    Point(point="end", input=FAIL_FIRST),
    Point(point="after", input=FAIL_FIRST),
]
# A worker frozen inside the transaction, declared dead, then thawed while another worker runs
# the step: a zombie whose late commit must not count twice. (Not on Django's SQLite database:
# a process frozen in its write transaction stalls every other until it goes on.)
FROZEN_POINTS = [Point(point="middle", frozen=True), Point(point="end", frozen=True)]
COMMITTED_POINTS = [
    Point(point="end", committed=True),
    Point(point="end", committed=True, input=FAIL_FIRST),
]


def random_points(count: int) -> list[Point]:
    """Moments after the step before the transaction ran: at the attempt's start, between
    its writes (which it spaces by `hold_ms`), or about its commit."""
    rng = random.Random(SEED)
    points = []
    for _ in range(count):
        hold_ms = rng.choice([100, 300, 600])
        points.append(Point(at=rng.uniform(0, hold_ms / 1000), input={"hold_ms": hold_ms}))
    return points


class Crew:
    """Two live workers; the one that is killed is replaced at once."""

    def __init__(self, tmp_path: Path, environment: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.environment = environment
        self.workers: list[Worker] = []
        self.started: list[Worker] = []
        self.kills = 0
        for _ in range(2):
            self._start()
        self.ready()

    def _start(self) -> None:
        log = self.tmp_path / f"worker-{len(self.started)}.log"
        worker = Worker(2, log, ready=False, group=True, **self.environment)
        self.workers.append(worker)
        self.started.append(worker)

    def ready(self) -> None:
        for worker in self.workers:
            worker.wait_ready(timeout=60)

    def by_pid(self, pid: int) -> Worker | None:
        return next((worker for worker in self.workers if worker.pid == pid), None)

    def kill(self, victim: Worker) -> None:
        victim.kill()
        self.kills += 1
        self.workers.remove(victim)
        self._start()

    def freeze(self, victim: Worker) -> None:
        """SIGSTOP, and a replacement: the frozen one is no longer one of the crew."""
        victim.freeze()
        self.kills += 1
        self.workers.remove(victim)
        self._start()

    def stop(self) -> None:
        for worker in self.started:
            worker.stop()


def kill_round(backend: Backend, crew: Crew, point: Point) -> tuple[str, str]:
    """One execution, one kill; its id and notes' key once it has completed elsewhere."""
    key = uuid.uuid4().hex
    if point.point:
        pause_at(key, f"{point.point}@{point.time}")
    execution_id = backend.trigger({"db": backend.db, "key": key, **point.input})
    if point.point:
        note = wait_for(lambda: notes(key, point.point)[point.time - 1 :], timeout=ROUND_TIMEOUT)[0]
        victim = crew.by_pid(note.pid)
    else:
        before = wait_for(lambda: notes(key, "before"), timeout=ROUND_TIMEOUT, interval=0.005)[0]
        time.sleep(max(0.0, before.at + point.at - time.time()))
        owner = backend.owner(execution_id)
        victim = crew.by_pid(int(owner.split(":")[1])) if owner else None
    assert victim is not None or not point.point, f"{point}: no worker of ours ran it"
    calls = 0
    if victim is not None and point.frozen:
        zombie_round(backend, crew, victim, execution_id, key)
    elif victim is not None:
        locked = backend.engine_lock(execution_id) if point.committed else nullcontext()
        with locked:
            if point.committed:
                go_on(key)
                wait_for(lambda: backend.stored(execution_id), timeout=ROUND_TIMEOUT)
                calls = len(notes(key, "begin"))
            crew.kill(victim)
    go_on(key)
    try:
        wait_for(lambda: backend.status(execution_id) == "completed", timeout=ROUND_TIMEOUT)
    except AssertionError:
        logs = "\n".join(worker.log.read_text()[-3000:] for worker in crew.workers)
        raise AssertionError(
            f"{point}: {execution_id} is {backend.status(execution_id)}, notes {notes(key)}\n{logs}"
        ) from None
    if point.committed:  # completed from the binding's row: fn did not run again
        assert len(notes(key, "begin")) == calls, f"{point}: {notes(key)}"
    return execution_id, key


def zombie_round(backend: Backend, crew: Crew, victim: Worker, execution_id: str, key: str) -> None:
    """Freeze the victim inside the step; once another worker has begun the step again, thaw
    it (it goes on from where it stopped), give it time for its late writes, then kill it."""
    crew.freeze(victim)
    go_on(key)
    try:
        wait_for(lambda: len(backend.write_step(execution_id)[2]) >= 2, timeout=ROUND_TIMEOUT)
    finally:
        victim.thaw()
    wait_for(lambda: backend.status(execution_id) == "completed", timeout=ROUND_TIMEOUT)
    time.sleep(1.5)
    victim.kill()


def check_exactly_once(backend: Backend, execution_id: str, key: str, point: Point) -> None:
    status, output, attempts = backend.write_step(execution_id)
    entries = backend.entries(execution_id)
    assert [entry for entry, _ in entries] == ["first", "second"], f"{point}: {entries}"
    assert {pid for _, pid in entries} == {output["pid"]}, f"{point}: one attempt wrote both"
    assert status == "completed" and output["entries"] == 2, point
    assert sum(state == "completed" for _, state in attempts) == 1, f"{point}: {attempts}"
    assert len(notes(key, "after")) >= 1, f"{point}: the step after it ran"
    if backend.db is not None:
        stored = backend.stored(execution_id)
        assert [value for _, value in stored] == [output], f"{point}: {stored}"


def storm(backend: Backend, tmp_path: Path, points: list[Point], budget: float) -> None:
    crew = Crew(tmp_path, backend.environment)
    begun = time.monotonic()
    try:
        for point in points:
            assert time.monotonic() - begun < budget, f"over the {budget} s budget at {point}"
            execution_id, key = kill_round(backend, crew, point)
            check_exactly_once(backend, execution_id, key, point)
            crew.ready()
    finally:
        crew.stop()
    seconds = time.monotonic() - begun
    print(f"\n[measured] {crew.kills} kills in {len(points)} rounds, {seconds:.1f} s")
    chosen = sum(1 for point in points if point.point)
    # Every chosen point kills; a random moment may fall where no worker holds it (a retry's
    # back-off, the end): most still do.
    assert crew.kills >= chosen + (len(points) - chosen) // 2, crew.kills


SQLITE_BACKENDS = {
    "binding": dict(db="DB", ledger_rows=sqlite_binding_rows, engine_lock=sqlite_engine_lock),
    "django": dict(db=None, ledger_rows=django_rows),
}


@pytest.mark.timeout(420)
@pytest.mark.parametrize("kind", ["binding", "django"])
def test_kill_9_around_a_transaction_step_on_sqlite(kind, tmp_path, sqlite_ledgers):
    backend = Backend(
        environment={},
        engine_rows=django_rows,
        engine_id=lambda execution_id: uuid.UUID(execution_id).hex,
        trigger=orm_trigger,
        **SQLITE_BACKENDS[kind],
    )
    points = POINTS + (COMMITTED_POINTS + FROZEN_POINTS if kind == "binding" else [])
    storm(backend, tmp_path, points + random_points(12 - len(points)), budget=300)


@needs_postgres
@pytest.mark.timeout(420)
def test_kill_9_around_a_transaction_step_on_a_postgres_binding(postgres_binding_backend, tmp_path):
    points = POINTS + COMMITTED_POINTS + FROZEN_POINTS
    storm(postgres_binding_backend, tmp_path, points + random_points(2), budget=300)


@needs_postgres
@needs_redis
@pytest.mark.timeout(420)
def test_kill_9_around_a_transaction_step_on_djangos_postgres_database_with_redis(
    postgres_django_backend, tmp_path
):
    points = POINTS + FROZEN_POINTS
    storm(postgres_django_backend, tmp_path, points + random_points(2), budget=300)
