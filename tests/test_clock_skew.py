"""A worker whose host clock is wrong by an hour (libfaketime) neither ends sleeps early nor
takes over live executions: ownership and wake times follow PostgreSQL's clock.

Needs PostgreSQL and Redis (a SQLite file shares its host's clock) and Debian's faketime."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, redis_url, wait_for, worker_environment
from tests.test_scaleout import all_ended, manage, reachable
from tests.test_scaleout import scaleout_env as shared_scaleout_env  # noqa: F401
from tests.workflows.app import calls

pytestmark = [
    pytest.mark.skipif(not reachable(5432), reason="PostgreSQL is not reachable on 127.0.0.1:5432"),
    pytest.mark.skipif(not reachable(6379), reason="Redis is not reachable on 127.0.0.1:6379"),
    pytest.mark.skipif(not shutil.which("faketime"), reason="faketime is not installed"),
]


REDIS = redis_url()  # this process's own queue: see tests/conftest.py


@pytest.fixture
def scaleout_env(shared_scaleout_env: dict[str, str]) -> dict[str, str]:  # noqa: F811
    import redis

    redis.Redis.from_url(REDIS).flushdb()
    return {**shared_scaleout_env, "PLOY_QUEUE_URL": REDIS}


@pytest.fixture
def skewed_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """`start(skew, env)`: a `runhuey` process with one thread, its clock off by `skew`."""
    processes: list[subprocess.Popen] = []

    def start(skew: str | None, env: dict[str, str]) -> subprocess.Popen:
        log = tmp_path / f"worker-{len(processes)}.log"
        command = [sys.executable, str(ROOT / "manage.py"), "runhuey", "--workers", "1"]
        if skew:
            # A wrong wall clock; the monotonic clock (timeouts, waits) is not the wall clock.
            command = ["faketime", "-m", "-f", skew, *command]
            env = {**env, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        with open(log, "w") as output:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=worker_environment(**env),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes.append(process)
        wait_for(lambda: "consumer started" in log.read_text(), timeout=60)
        return process

    yield start
    for process in processes:  # faketime runs the worker as its child: kill the whole group
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def errors(env: dict[str, str], ids: list[str]) -> list[object]:
    import psycopg

    with psycopg.connect(env["DATABASE_URL"]) as connection:
        rows = connection.execute(
            "SELECT error FROM engine_execution WHERE id = ANY(%s::uuid[])", (ids,)
        ).fetchall()
    return [error for (error,) in rows]


def step_times(env: dict[str, str], execution_id: str) -> dict[str, tuple]:
    import psycopg

    with psycopg.connect(env["DATABASE_URL"]) as connection:
        rows = connection.execute(
            "SELECT name, started_at, wake_at FROM engine_step WHERE execution_id = %s",
            (execution_id,),
        ).fetchall()
    return {name: (started_at, wake_at) for name, started_at, wake_at in rows}


@pytest.mark.parametrize("skew", ["+1h", "-1h"])
def test_a_skewed_worker_sleeps_as_long_as_asked(scaleout_env, skewed_worker, skew):
    skewed_worker(skew, scaleout_env)
    began = time.monotonic()
    execution_id = manage(scaleout_env, "trigger", "SLEEPER", '{"ms": 4000}')
    ended = wait_for(lambda: all_ended(scaleout_env, [execution_id]), timeout=40, interval=0.2)
    assert ended == {execution_id: "completed"}
    assert time.monotonic() - began >= 4  # not ended early (-1h), nor an hour late (+1h)
    times = step_times(scaleout_env, execution_id)
    asked = times["sleep:1"][1] - times["sleep:1"][0]
    assert 3.9 <= asked.total_seconds() <= 4.5  # the wake time is on the database's clock
    assert times["after"][0] >= times["sleep:1"][1]
    assert calls(execution_id) == ["before", "after"]


def test_a_leader_whose_clock_runs_ahead_takes_over_nothing_alive(
    scaleout_env,
    skewed_worker,
):
    # the first worker started leads: it sees every heartbeat as an hour old on its clock
    skewed_worker("+1h", scaleout_env)
    skewed_worker(None, scaleout_env)
    ids = [manage(scaleout_env, "trigger", "SLOW", '{"seconds": 6}') for _ in range(2)]
    ended = wait_for(lambda: all_ended(scaleout_env, ids), timeout=60, interval=0.2)
    assert set(ended.values()) == {"completed"}, errors(scaleout_env, ids)
    for execution_id in ids:
        assert calls(execution_id) == ["first", "slow", "last"]  # never taken over mid-step


def test_a_leader_whose_clock_runs_behind_still_finds_a_dead_worker(
    scaleout_env,
    skewed_worker,
):
    skewed_worker("-1h", scaleout_env)  # the leader: a dead worker's heartbeat looks fresh to it
    victim = skewed_worker(None, scaleout_env)
    execution_ids = [manage(scaleout_env, "trigger", "SLOW", '{"seconds": 4}') for _ in range(2)]
    wait_for(
        lambda: all(calls(execution_id)[:2] == ["first", "slow"] for execution_id in execution_ids)
    )
    os.killpg(victim.pid, signal.SIGKILL)
    ended = wait_for(lambda: all_ended(scaleout_env, execution_ids), timeout=30, interval=0.2)
    assert set(ended.values()) == {"completed"}, errors(scaleout_env, execution_ids)


def test_a_wake_time_set_by_a_clock_behind_is_not_early_for_others(scaleout_env, skewed_worker):
    skewed = skewed_worker("-1h", scaleout_env)
    began = time.monotonic()  # before the trigger: its command's exit can take a second
    execution_id = manage(scaleout_env, "trigger", "SLEEPER", '{"ms": 12000}')
    wait_for(lambda: "sleep:1" in step_times(scaleout_env, execution_id))
    # the rest runs on hosts with a right clock: a wake time in the past would end it at once
    os.killpg(skewed.pid, signal.SIGKILL)
    skewed_worker(None, scaleout_env)
    manage(scaleout_env, "shell", "-c", "from engine import runtime; runtime.sweep()")
    wait_for(lambda: all_ended(scaleout_env, [execution_id]), timeout=30, interval=0.2)
    assert time.monotonic() - began >= 11.5
    assert calls(execution_id) == ["before", "after"]
