"""A schedule ticking with two real `runhuey` workers: one execution per tick, none twice, on
SQLite files and on PostgreSQL + Redis (skipped, with the reason, where either is unreachable).

The workers load tests/workflows_schedules/ploy.yaml (`every: 1s`), so no other test's workers
ever tick schedules."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine import schedules
from engine.models import Execution, Schedule
from tests.conftest import ROOT, redis_url, wait_for, worker_environment
from tests.test_scaleout import manage, reachable
from tests.test_scaleout import scaleout_env as shared_scaleout_env  # noqa: F401
from tests.workflows_schedules.schedule_app import recorded, ticks_file

CONFIG = str(Path(__file__).resolve().parent / "workflows_schedules" / "ploy.yaml")
REDIS = redis_url()  # this process's own queue: see tests/conftest.py
TICKING_SECONDS = 6
KEY_PREFIX = "schedule:TICKER:"


@pytest.fixture(autouse=True)
def _fresh_ticks() -> None:
    ticks_file().unlink(missing_ok=True)


def tick_times(keys: list[str]) -> list[datetime]:
    return sorted(datetime.fromisoformat(key.removeprefix(KEY_PREFIX)) for key in keys)


def check_one_execution_per_tick(keys: list[str], execution_ids: list[str]) -> None:
    """Each tick of the 1 s grid started one execution, whose body ran once."""
    assert len(keys) == len(set(keys)) == len(execution_ids), "a tick started two executions"
    ticks = tick_times(keys)
    # About one a second (a loaded machine may stall the leader: then only the latest missed
    # tick runs, which leaves a gap, never a duplicate).
    assert len(ticks) >= TICKING_SECONDS - 2, ticks
    for earlier, later in zip(ticks, ticks[1:], strict=False):
        gap = (later - earlier) / timedelta(seconds=1)
        assert gap >= 1 and abs(gap - round(gap)) < 0.001, f"off the 1 s grid: {earlier} {later}"
    runs = [line["execution"] for line in recorded() if "execution" in line]
    assert sorted(runs) == sorted(execution_ids), "each tick's workflow ran once"


def tick_for_a_while(count: Callable[[], int], pause: Callable[[], None]) -> tuple[int, float]:
    """Let the schedule tick, pause it, and make sure nothing starts after the pause."""
    wait_for(lambda: count() >= 1, timeout=60, interval=0.1)
    time.sleep(TICKING_SECONDS)
    pause()
    paused_at = count()
    time.sleep(2.5)
    return paused_at, count()


@pytest.mark.django_db(transaction=True)
def test_two_workers_on_sqlite_start_one_execution_per_tick(start_worker):
    start_worker(threads=2, PLOY_CONFIG=CONFIG)
    start_worker(threads=2, PLOY_CONFIG=CONFIG)
    ticker = Execution.objects.filter(binding="REPORT", idempotency_key__startswith=KEY_PREFIX)
    paused_at, later = tick_for_a_while(ticker.count, lambda: schedules.pause("TICKER"))
    assert later == paused_at, "a paused schedule started an execution"
    wait_for(lambda: not ticker.filter(status="running").exists(), timeout=60, interval=0.2)
    rows = list(ticker.values_list("idempotency_key", "id", "status"))
    assert {status for _, _, status in rows} == {"completed"}
    check_one_execution_per_tick([key for key, _, _ in rows], [str(id) for _, id, _ in rows])
    schedule = Schedule.objects.get(name="TICKER")
    latest = ticker.order_by("-idempotency_key").first()
    assert schedule.last_execution_id == latest.id and schedule.paused


@pytest.fixture
def scaleout_env(shared_scaleout_env: dict[str, str]) -> Iterator[dict[str, str]]:  # noqa: F811
    import redis

    queue = redis.Redis.from_url(REDIS)
    queue.flushdb()
    yield {**shared_scaleout_env, "PLOY_QUEUE_URL": REDIS, "PLOY_CONFIG": CONFIG}
    queue.flushdb()


def query(env: dict[str, str], sql: str, *params: object) -> list[tuple]:
    import psycopg

    with psycopg.connect(env["DATABASE_URL"]) as connection:
        return connection.execute(sql, params).fetchall()


@pytest.mark.skipif(not reachable(5432), reason="PostgreSQL is not reachable on 127.0.0.1:5432")
@pytest.mark.skipif(not reachable(6379), reason="Redis is not reachable on 127.0.0.1:6379")
def test_two_workers_on_postgres_and_redis_start_one_execution_per_tick(scaleout_env, start_worker):
    start_worker(threads=2, **scaleout_env)
    start_worker(threads=2, **scaleout_env)
    ticker = "FROM engine_execution WHERE binding = 'REPORT' AND idempotency_key LIKE %s"

    def count() -> int:
        return query(scaleout_env, f"SELECT count(*) {ticker}", f"{KEY_PREFIX}%")[0][0]

    def pause() -> None:
        code = "from engine import schedules; schedules.pause('TICKER')"
        manage(scaleout_env, "shell", "-c", code)

    paused_at, later = tick_for_a_while(count, pause)
    assert later == paused_at, "a paused schedule started an execution"
    running = f"SELECT count(*) {ticker} AND status = 'running'"
    wait_for(
        lambda: query(scaleout_env, running, f"{KEY_PREFIX}%")[0][0] == 0, timeout=60, interval=0.2
    )
    rows = query(
        scaleout_env, f"SELECT idempotency_key, id::text, status {ticker}", f"{KEY_PREFIX}%"
    )
    assert {status for _, _, status in rows} == {"completed"}
    check_one_execution_per_tick([key for key, _, _ in rows], [id for _, id, _ in rows])
    [(last_execution, paused)] = query(
        scaleout_env,
        "SELECT last_execution_id::text, paused FROM engine_schedule WHERE name = 'TICKER'",
    )
    assert paused and last_execution == max(rows)[1]


# Two "leaders" at once: each process calls tick() in a loop, as a leader does every heartbeat.
RACING_LEADER = """
import time
from engine import schedules
fired, end = 0, time.monotonic() + 5
while time.monotonic() < end:
    fired += len(schedules.tick())
    time.sleep(0.01)
print(fired)
"""


def race_two_leaders(env: dict[str, str]) -> int:
    """How many executions the two processes started between them."""
    processes = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "shell", "-c", RACING_LEADER],
            cwd=ROOT,
            env=worker_environment(**{"PLOY_CONFIG": CONFIG, **env}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    fired = 0
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        fired += int(out.strip().splitlines()[-1])
    return fired


@pytest.mark.django_db(transaction=True)
def test_two_leaders_ticking_at_once_on_sqlite_start_one_execution_per_tick():
    fired = race_two_leaders({})
    # Every schedule's executions: EVERY_MINUTE fires too when the race spans a minute.
    keys = list(
        Execution.objects.filter(idempotency_key__startswith="schedule:").values_list(
            "idempotency_key", flat=True
        )
    )
    assert fired == len(keys) == len(set(keys))
    rows = [key for key in keys if key.startswith(KEY_PREFIX)]
    assert len(rows) >= 3
    ticks = tick_times(rows)
    assert all((b - a) / timedelta(seconds=1) >= 1 for a, b in zip(ticks, ticks[1:], strict=False))


@pytest.mark.skipif(not reachable(5432), reason="PostgreSQL is not reachable on 127.0.0.1:5432")
@pytest.mark.skipif(not reachable(6379), reason="Redis is not reachable on 127.0.0.1:6379")
def test_two_leaders_ticking_at_once_on_postgres_start_one_execution_per_tick(scaleout_env):
    fired = race_two_leaders(scaleout_env)
    keys = [
        key
        for (key,) in query(
            scaleout_env,
            "SELECT idempotency_key FROM engine_execution WHERE idempotency_key LIKE %s",
            "schedule:%",
        )
    ]
    assert fired == len(keys) == len(set(keys))
    assert len([key for key in keys if key.startswith(KEY_PREFIX)]) >= 3


def test_tick_times_parse_from_the_keys():
    keys = [f"{KEY_PREFIX}2026-12-01T10:00:31.000000Z", f"{KEY_PREFIX}2026-12-01T10:00:30.500000Z"]
    assert tick_times(keys) == [
        datetime(2026, 12, 1, 10, 0, 30, 500000, tzinfo=UTC),
        datetime(2026, 12, 1, 10, 0, 31, tzinfo=UTC),
    ]
