"""Fault injection on PostgreSQL + Redis with real `manage.py runhuey` processes: SIGKILL at
random points, Redis restarted empty, PostgreSQL connections terminated mid-step, recovery and
hand-over times. Step bodies mark their runs in files (tests/workflows/faults.py).

Skipped, with the reason, where PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379, or the
`redis-server` binary for the restart test) is not there. The queue is this process's Redis db;
tests/test_scaleout.py uses db 15. `pytest -s` prints the measured times."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import (
    drop_postgres,
    migrated_postgres,
    redis_url,
    wait_for,
    worker_environment,
)
from tests.test_faults import (
    CHAIN_NAMES,
    DEFAULT_TIMEOUT,
    AttemptRow,
    ExecutionRow,
    StepRow,
    first_start_after,
    kill_storm,
    report,
    seconds,
)
from tests.workflows.faults import CHAIN_STEPS, marks, starts

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = "postgres://postgres@127.0.0.1:5432"
REDIS = redis_url()  # this process's own queue: see tests/conftest.py
SWEEP_SECONDS = 3
SWEEP_GRACE_SECONDS = 1  # tests/settings.py


def reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


pytestmark = [
    pytest.mark.skipif(not reachable(5432), reason="PostgreSQL is not reachable on 127.0.0.1:5432"),
    pytest.mark.skipif(not reachable(6379), reason="Redis is not reachable on 127.0.0.1:6379"),
]


class PostgresStore:
    """The test's PostgreSQL database read with psycopg; executions triggered by one long-lived
    `manage.py shell` on the same settings as the workers (one line in, one id out)."""

    def __init__(self, env: dict[str, str]) -> None:
        import psycopg

        self.env = env
        self.connection = psycopg.connect(env["DATABASE_URL"], autocommit=True)
        self._shell: subprocess.Popen | None = None

    def trigger(self, binding: str, input: object) -> str:
        return self.trigger_many(binding, [input])[0]

    def trigger_many(self, binding: str, inputs: list[object]) -> list[str]:
        shell = self._start_shell()
        for input in inputs:
            shell.stdin.write(json.dumps([binding, input]) + "\n")
        shell.stdin.flush()
        return [self._read_id(shell) for _ in inputs]

    @staticmethod
    def _read_id(shell: subprocess.Popen) -> str:
        """The next id it printed (the shell may print a banner of its own first)."""
        while line := shell.stdout.readline():
            if line.startswith("execution "):
                return line.split()[1]
        raise AssertionError(f"the trigger shell stopped: {shell.wait()}")

    def _start_shell(self) -> subprocess.Popen:
        if self._shell is None:
            # A second reading of the database's clock: the first one, on a new connection,
            # reads a few ms ahead (see test_faults.py), so every wake time would too.
            code = (
                "import json, sys\n"
                "from engine import clock, runtime\n"
                "clock.now()\n"
                "clock.measure()\n"
                "for line in sys.stdin:\n"
                "    binding, input = json.loads(line)\n"
                "    print('execution', runtime.trigger(binding, input).execution_id, flush=True)\n"
            )
            self._shell = subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), "shell", "-c", code],
                cwd=ROOT,
                env=worker_environment(**self.env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        return self._shell

    def close(self) -> None:
        if self._shell is not None:
            self._shell.stdin.close()
            self._shell.wait(timeout=30)
        self.connection.close()

    def rows(self, sql: str, *params: object) -> list[tuple]:
        return self.connection.execute(sql, params).fetchall()

    def running_count(self) -> int:
        return self.rows("SELECT count(*) FROM engine_execution WHERE status = 'running'")[0][0]

    def owners(self) -> set[str]:
        found = self.rows(
            "SELECT DISTINCT owner FROM engine_execution "
            "WHERE status = 'running' AND owner IS NOT NULL"
        )
        return {owner for (owner,) in found}

    def running_attempts(self, worker_ids: list[str]) -> list[tuple[str, str, int]]:
        return [
            (str(execution_id), step, number)
            for execution_id, step, number in self.rows(
                "SELECT s.execution_id, s.name, a.number FROM engine_attempt a "
                "JOIN engine_step s ON s.id = a.step_id "
                "WHERE a.worker = ANY(%s) AND a.status = 'running'",
                worker_ids,
            )
        ]

    def executions(self, ids: list[str]) -> list[ExecutionRow]:
        attempts: dict[int, list[AttemptRow]] = {}
        for step_id, number, status, error_type, worker, started_at in self.rows(
            "SELECT a.step_id, a.number, a.status, a.error_type, a.worker, a.started_at "
            "FROM engine_attempt a JOIN engine_step s ON s.id = a.step_id "
            "WHERE s.execution_id = ANY(%s::uuid[]) ORDER BY a.step_id, a.number",
            ids,
        ):
            attempts.setdefault(step_id, []).append(
                AttemptRow(
                    number=number,
                    status=status,
                    error_type=error_type,
                    worker=worker,
                    started_at=started_at.timestamp(),
                )
            )
        steps: dict[str, list[StepRow]] = {}
        for step_id, execution_id, name, status, output, finished_at, wake_at in self.rows(
            "SELECT id, execution_id, name, status, output, finished_at, wake_at "
            "FROM engine_step WHERE execution_id = ANY(%s::uuid[]) "
            "ORDER BY execution_id, position",
            ids,
        ):
            steps.setdefault(str(execution_id), []).append(
                StepRow(
                    name=name,
                    status=status,
                    output=output,
                    finished_at=seconds(finished_at),
                    wake_at=seconds(wake_at),
                    attempts=attempts.get(step_id, []),
                )
            )
        return [
            ExecutionRow(
                id=str(execution_id),
                status=status,
                input=input,
                output=output,
                error=error,
                steps=steps.get(str(execution_id), []),
            )
            for execution_id, status, input, output, error in self.rows(
                "SELECT id, status, input, output, error FROM engine_execution "
                "WHERE id = ANY(%s::uuid[])",
                ids,
            )
        ]

    def execution(self, execution_id: str) -> ExecutionRow:
        (found,) = self.executions([execution_id])
        return found

    def finished_at(self, execution_id: str) -> datetime | None:
        return self.rows(
            "SELECT finished_at FROM engine_execution WHERE id = %s::uuid", execution_id
        )[0][0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def manage(env: dict[str, str], *args: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=worker_environment(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


@contextmanager
def fresh_database(env: dict[str, str]) -> Iterator[str]:
    """A new PostgreSQL database for one test, migrated; dropped afterwards."""
    url = migrated_postgres("ployweb_faults")
    try:
        yield url
    finally:
        drop_postgres(url)


@pytest.fixture
def scaleout_env() -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database and an empty Redis queue (its db on 6379)."""
    import redis

    redis.Redis.from_url(REDIS).flushdb()
    with fresh_database({"PLOY_QUEUE_URL": REDIS}) as url:
        yield {"DATABASE_URL": url, "PLOY_QUEUE_URL": REDIS}
    redis.Redis.from_url(REDIS).flushdb()


@pytest.fixture
def store(scaleout_env: dict[str, str]) -> Iterator[PostgresStore]:
    opened = PostgresStore(scaleout_env)
    yield opened
    opened.close()


class RedisServer:
    """This test's own `redis-server`, on a free port, keeping nothing on disk."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=open(self.log, "a"),  # noqa: SIM115 - the server's own log, closed with it
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: reachable(self.port), timeout=10)

    def kill(self) -> None:
        """SIGKILL: everything it held (queue, scheduled messages) is gone."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process.stdout and self.process.stdout.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("the redis-server binary is not installed (needed to restart a Redis)")
    server = RedisServer(tmp_path / "redis.log")
    yield server
    server.kill()


@pytest.fixture
def own_redis_env(own_redis: RedisServer) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database and this test's own Redis as the queue."""
    with fresh_database({"PLOY_QUEUE_URL": own_redis.url}) as url:
        yield {"DATABASE_URL": url, "PLOY_QUEUE_URL": own_redis.url}


@pytest.fixture
def own_redis_store(own_redis_env: dict[str, str]) -> Iterator[PostgresStore]:
    opened = PostgresStore(own_redis_env)
    yield opened
    opened.close()


# --- kill -9 at random points ----------------------------------------------------------------


def test_kill_9_at_random_points_on_postgres_and_redis(scaleout_env, store, start_worker):
    kill_storm(
        start_worker,
        store,
        kill_points=20,
        workers=3,
        environment={**scaleout_env, "PLOY_SWEEP_SECONDS": "2"},
    )


# --- workers racing, the API triggering more -------------------------------------------------

RACE_TRIGGERED = 1600
RACE_API_THREADS = 4
RACE_API_EACH = 100


@pytest.fixture
def web(scaleout_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The web app under gunicorn (2 processes x 4 threads) on the scale-out database; its URL.
    Not runserver: its thread per request keeps a PostgreSQL connection open each."""
    port = free_port()
    log = open(tmp_path / "web.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "ployweb.wsgi", "-b", f"127.0.0.1:{port}"]
        + ["--workers", "2", "--threads", "4"],
        cwd=ROOT,
        env=worker_environment(**scaleout_env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: reachable(port) or server.poll() is not None, timeout=30)
        assert server.poll() is None, (tmp_path / "web.log").read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_three_workers_race_on_postgres_and_redis_while_the_api_triggers_more(
    scaleout_env, store, web, start_worker
):
    """3 workers x 4 threads; 1,600 executions triggered by a shell and 400 more through the
    HTTP API from 4 threads at the same time, at the default worker timeout (the leader's
    sweeps run beside its heartbeats, never in their way: tests/test_leader.py), and a short
    sweep: a message dropped by the engine (see test_faults.py) is found again soon."""
    environment = {
        **scaleout_env,
        "PLOY_WORKER_TIMEOUT_SECONDS": DEFAULT_TIMEOUT,
        "PLOY_SWEEP_SECONDS": str(SWEEP_SECONDS),
    }
    workers = [start_worker(threads=4, **environment) for _ in range(3)]

    def through_the_api(thread: int) -> list[str]:
        ids = []
        for n in range(RACE_API_EACH):
            request = urllib.request.Request(
                f"{web}/api/workflows/FAULT_QUICK/trigger",
                data=json.dumps({"n": f"api-{thread}-{n}"}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert answer.status == 202
                ids.append(json.load(answer)["executionId"])
        return ids

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=RACE_API_THREADS) as pool:
        from_api = pool.map(through_the_api, range(RACE_API_THREADS))
        ids = store.trigger_many("FAULT_QUICK", [{"n": n} for n in range(RACE_TRIGGERED)])
        ids += [execution_id for batch in from_api for execution_id in batch]
    assert len(set(ids)) == RACE_TRIGGERED + RACE_API_THREADS * RACE_API_EACH
    wait_for(lambda: store.running_count() == 0, timeout=120, interval=0.5)
    elapsed = time.monotonic() - started

    executions = store.executions(ids)
    assert {execution.status for execution in executions} == {"completed"}
    twice = [e.id for e in executions if step_counts(e.id) != {"a": 1, "b": 1}]
    assert not twice, twice[:5]
    assert all(len(step.attempts) == 1 for e in executions for step in e.steps)
    for worker in workers:
        log = worker.log.read_text()
        assert "deadlock" not in log.lower()
        assert "Traceback" not in log, log[-3000:]
        assert "engine write failed" not in log
    print(f"\n{len(ids)} executions on 3 workers x 4 threads in {elapsed:.1f} s")


# --- Redis restarted empty -------------------------------------------------------------------


def test_redis_restarted_empty_loses_no_queued_or_sleeping_execution(
    own_redis, own_redis_env, own_redis_store, start_worker
):
    """Executions asleep (their wake-up messages in Redis) and queued behind busy workers;
    Redis is killed and started again empty: the sweep finds them all."""
    store, env = own_redis_store, own_redis_env
    environment = {**env, "PLOY_SWEEP_SECONDS": str(SWEEP_SECONDS)}
    workers = [start_worker(threads=2, **environment) for _ in range(2)]
    sleeping = store.trigger_many("FAULT_NAP", [{"ms": ms} for ms in (1500, 3000, 4500, 6000)])
    wait_for(lambda: all(starts(execution_id, "before") for execution_id in sleeping))
    busy = store.trigger_many("FAULT_HOLD", [{"seconds": [2]}] * 4)  # every thread is taken
    wait_for(lambda: sum(bool(starts(execution_id, "long")) for execution_id in busy) == 4)
    queued = store.trigger_many("FAULT_QUICK", [{"n": n} for n in range(6)])
    assert not any(starts(execution_id) for execution_id in queued)

    own_redis.kill()
    restarted_at = time.time()
    own_redis.start()

    everything = [*sleeping, *busy, *queued]
    wait_for(lambda: store.running_count() == 0, timeout=30, interval=0.2)
    late = []
    for execution in store.executions(everything):
        assert execution.status == "completed", (execution.id, execution.error)
        finished_at = store.finished_at(execution.id).timestamp()
        wake_at = max(
            (step.wake_at or 0 for step in execution.steps if step.name.startswith("sleep:")),
            default=0,
        )
        # due by then: its wake time, or the restart; found by the next sweep at the latest
        due = max(wake_at, restarted_at)
        late.append(finished_at - due)
        assert finished_at - due <= SWEEP_SECONDS + SWEEP_GRACE_SECONDS + 1.5, execution.id
    for execution_id in everything:
        assert all(count == 1 for count in step_counts(execution_id).values()), execution_id
    for worker in workers:
        assert worker.process.poll() is None  # the workers rode it out
    report(f"Redis restarted empty -> done after due (sweep every {SWEEP_SECONDS} s)", late)


def step_counts(execution_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in starts(execution_id):
        counts[run.step] = counts.get(run.step, 0) + 1
    return counts


# --- PostgreSQL connections terminated -------------------------------------------------------


def terminate_connections(store: PostgresStore) -> int:
    (database,) = store.rows("SELECT current_database()")[0]
    return len(
        store.rows(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            database,
        )
    )


def test_terminated_postgres_connections_never_run_a_step_twice_at_once(
    scaleout_env, store, start_worker
):
    environment = {**scaleout_env, "PLOY_SWEEP_SECONDS": str(SWEEP_SECONDS)}
    workers = [start_worker(threads=2, **environment) for _ in range(3)]
    ids = store.trigger_many(
        "FAULT_CHAIN", [{"n": n, "step_ms": 600, "sleep_ms": 300} for n in range(10)]
    )
    terminated = 0
    for _ in range(3):
        wait_for(lambda: any(running_bodies(execution_id) for execution_id in ids))
        terminated += terminate_connections(store)
        time.sleep(1.5)
    wait_for(lambda: store.running_count() == 0, timeout=60, interval=0.2)

    repeated = 0
    for execution in store.executions(ids):
        assert execution.status == "completed", (execution.id, execution.error)
        assert execution.output == {"steps": CHAIN_NAMES, "n": execution.input["n"]}
        assert [step.name for step in execution.steps] == list(CHAIN_STEPS)
        for step in execution.steps:
            if step.name.startswith("sleep:"):
                continue
            runs = body_runs(execution.id, step.name)
            # never two runs of one step at once, and each run recorded as an attempt
            for before, after in zip(runs, runs[1:], strict=False):
                assert before[1] <= after[0], (execution.id, step.name, runs)
            assert len(runs) == len(step.attempts), (execution.id, step.name, step.attempts)
            repeated += len(runs) - 1 - (step.name == "flaky")
    logs = "".join(worker.log.read_text() for worker in workers)
    assert "heartbeat failed" in logs or "engine write failed" in logs  # the cut did land
    for worker in workers:
        assert worker.process.poll() is None
        # its main thread's connection was cut too: it signs off on a new one
        worker.stop()
        log = worker.log.read_text()
        assert "Traceback" not in log and f"worker {worker.worker_id} stopped" in log, log
    print(f"\n{terminated} connections terminated in 3 rounds; {repeated} step bodies ran again")


def running_bodies(execution_id: str) -> list[str]:
    """Steps whose body started and has not ended."""
    open_steps: dict[str, int] = {}
    for found in marks(execution_id):
        open_steps[found.step] = open_steps.get(found.step, 0) + (found.event == "start") * 2 - 1
    return [step for step, count in open_steps.items() if count > 0]


def body_runs(execution_id: str, step: str) -> list[tuple[float, float]]:
    """(start, end) of each run of the step's body, in order; no process dies in this test."""
    found = [mark for mark in marks(execution_id) if mark.step == step]
    runs = []
    for start, end in zip(found[::2], found[1::2], strict=True):
        assert (start.event, end.event, start.pid) == ("start", "end", end.pid), found
        runs.append((start.at, end.at))
    return runs


# --- recovery and hand-over times ------------------------------------------------------------


@pytest.mark.parametrize("backlog", [0, 1000])
def test_recovery_after_kill_9_with_the_default_timeout_on_postgres_and_redis(
    scaleout_env, store, start_worker, backlog
):
    """PLOY_WORKER_TIMEOUT_SECONDS=5; with 1,000 new executions queued ahead in Redis, the
    freed execution jumps them (PriorityRedisHuey)."""
    environment = {**scaleout_env, "PLOY_WORKER_TIMEOUT_SECONDS": DEFAULT_TIMEOUT}
    victim = start_worker(threads=1, **environment)
    execution_id = store.trigger("FAULT_HOLD", {"seconds": [60, 0]})
    wait_for(lambda: starts(execution_id, "long"))
    queued = store.trigger_many("FAULT_QUICK", [{"n": n, "ms": 30} for n in range(backlog)])
    start_worker(threads=2, **environment)
    killed_at = time.time()
    victim.kill()

    resumed = first_start_after(execution_id, killed_at, "long")
    recovery = resumed - killed_at
    still_waiting = sum(not starts(queued_id) for queued_id in queued)
    wait_for(lambda: store.execution(execution_id).status == "completed", timeout=15)
    assert recovery <= 10
    if backlog:
        assert still_waiting > backlog / 2
    where = f"backlog of {backlog}, {still_waiting} still queued" if backlog else "no backlog"
    report(f"kill -9 -> step runs again, PostgreSQL + Redis, default timeout, {where}", recovery)


def test_sigterm_hands_over_within_2_seconds_on_postgres_and_redis(
    scaleout_env, store, start_worker
):
    leaving = start_worker(threads=1, **scaleout_env)
    execution_id = store.trigger("FAULT_HOLD", {"seconds": [3]})
    wait_for(lambda: starts(execution_id, "long"))
    # SIGTERM at once, mid-step: under load a worker can take longer to start than the step
    staying = start_worker(threads=1, ready=False, **scaleout_env)
    leaving.terminate()
    assert not [m for m in marks(execution_id) if m.step == "long" and m.event == "end"]
    staying.wait_ready()
    ready_at = time.time()  # the hand-over is timed from when a worker could take it
    leaving.process.wait(timeout=15)
    assert leaving.process.returncode == 0

    wait_for(lambda: store.execution(execution_id).status == "completed", timeout=15)
    execution = store.execution(execution_id)
    assert execution.output == {"first": leaving.pid, "long": leaving.pid, "last": staying.pid}
    (long,) = [step for step in execution.steps if step.name == "long"]
    assert [(a.status, a.error_type) for a in long.attempts] == [("completed", "")]
    (body_end,) = [m.at for m in marks(execution_id) if m.step == "long" and m.event == "end"]
    (next_start,) = [run.at for run in starts(execution_id, "last")]
    hand_over = next_start - max(body_end, ready_at)
    assert next_start > body_end and hand_over <= 2.0
    report("SIGTERM -> next step on another worker, PostgreSQL + Redis", hand_over)
