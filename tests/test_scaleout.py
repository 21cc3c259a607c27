"""Scale-out: PostgreSQL for Django and Redis for Huey, several worker processes.

Skipped, with the reason, where either server is not reachable on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    drop_postgres,
    migrated_postgres,
    redis_url,
    wait_for,
    worker_environment,
)
from tests.workflows.app import calls

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = "postgres://postgres@127.0.0.1:5432"
REDIS = redis_url()  # this process's own queue: see tests/conftest.py


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


@pytest.fixture
def scaleout_env() -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database, migrated, and an empty Redis queue."""
    import redis

    redis.Redis.from_url(REDIS).flushdb()
    env = {"DATABASE_URL": migrated_postgres(), "PLOY_QUEUE_URL": REDIS}
    yield env
    drop_postgres(env["DATABASE_URL"])


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=worker_environment(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def statuses(env: dict[str, str], ids: list[str]) -> dict[str, str]:
    import psycopg

    with psycopg.connect(env["DATABASE_URL"]) as connection:
        rows = connection.execute(
            "SELECT id::text, status FROM engine_execution WHERE id = ANY(%s::uuid[])", (ids,)
        ).fetchall()
    return dict(rows)


def all_ended(env: dict[str, str], ids: list[str]) -> dict[str, str] | None:
    current = statuses(env, ids)
    return current if all(status != "running" for status in current.values()) else None


def test_many_workers_on_postgres_and_redis_run_every_step_once(scaleout_env, start_worker):
    for _ in range(3):
        start_worker(threads=4, **scaleout_env)
    ids = [
        manage(
            scaleout_env,
            "trigger",
            "DATA_FLOW",
            f'{{"action": "double", "value": {n}, "sleep_ms": 200}}',
        )
        for n in range(12)
    ]
    ended = wait_for(lambda: all_ended(scaleout_env, ids), timeout=60, interval=0.2)
    assert set(ended.values()) == {"completed"}
    for execution_id in ids:
        assert calls(execution_id) == ["validate", "process", "store"]


def test_a_killed_worker_is_replaced_on_postgres_and_redis(scaleout_env, start_worker):
    first = start_worker(**scaleout_env)
    execution_id = manage(
        scaleout_env, "trigger", "DATA_FLOW", '{"action": "double", "value": 21, "pause": 60}'
    )
    wait_for(lambda: calls(execution_id) == ["validate", "process"])
    first.kill()
    start_worker(**scaleout_env)
    ended = wait_for(lambda: all_ended(scaleout_env, [execution_id]), timeout=30)
    assert ended == {execution_id: "completed"}
    assert calls(execution_id) == ["validate", "process", "process", "store"]
