"""Waiting and composition on PostgreSQL and Redis with several `runhuey` processes: a fan-out
over three workers, and a kill -9 in the middle of each primitive.

Skipped, with the reason, where either server is not reachable on 127.0.0.1."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Worker, redis_url, wait_for
from tests.test_scaleout import all_ended, manage, reachable
from tests.test_scaleout import scaleout_env as shared_scaleout_env  # noqa: F401
from tests.workflows.app import calls

pytestmark = [
    pytest.mark.skipif(not reachable(5432), reason="PostgreSQL is not reachable on 127.0.0.1:5432"),
    pytest.mark.skipif(not reachable(6379), reason="Redis is not reachable on 127.0.0.1:6379"),
]

REDIS = redis_url()  # this process's own queue: see tests/conftest.py


@pytest.fixture
def scaleout_env(shared_scaleout_env: dict[str, str]):  # noqa: F811
    import redis

    queue = redis.Redis.from_url(REDIS)
    queue.flushdb()
    yield {**shared_scaleout_env, "PLOY_QUEUE_URL": REDIS}
    queue.flushdb()


def query(env: dict[str, str], sql: str, *params: object) -> list[tuple]:
    import psycopg

    with psycopg.connect(env["DATABASE_URL"]) as connection:
        return connection.execute(sql, params).fetchall()


def trigger(env: dict[str, str], binding: str, input: object) -> str:
    return manage(env, "trigger", binding, json.dumps(input))


def send_event(env: dict[str, str], execution_id: str, payload: object) -> None:
    code = f"from engine import events; events.send_event({execution_id!r}, 'go', {payload!r})"
    manage(env, "shell", "-c", code)


def ended(env: dict[str, str], execution_id: str, timeout: float = 40) -> dict:
    wait_for(lambda: all_ended(env, [execution_id]), timeout=timeout, interval=0.2)
    [(status, output, error, run_count)] = query(
        env,
        "SELECT status, output, error, run_count FROM engine_execution WHERE id = %s",
        execution_id,
    )
    return {"status": status, "output": output, "error": error, "run_count": run_count}


def children(env: dict[str, str], parent_id: str) -> list[tuple[str, str]]:
    """(id, status) of each child, in input order."""
    return query(
        env,
        "SELECT id::text, status FROM engine_execution WHERE parent_id = %s ORDER BY parent_index",
        parent_id,
    )


def step_status(env: dict[str, str], execution_id: str, name: str) -> str | None:
    rows = query(
        env,
        "SELECT status FROM engine_step WHERE execution_id = %s AND name = %s",
        execution_id,
        name,
    )
    return rows[0][0] if rows else None


def attempts(env: dict[str, str], execution_id: str, name: str) -> list[tuple[int, str, str]]:
    return query(
        env,
        "SELECT a.number, a.status, a.error_type FROM engine_attempt a "
        "JOIN engine_step s ON s.id = a.step_id WHERE s.execution_id = %s AND s.name = %s "
        "ORDER BY a.number",
        execution_id,
        name,
    )


def consumers(env: dict[str, str], execution_id: str) -> list[tuple[object, str | None]]:
    return query(
        env,
        "SELECT e.payload, s.name FROM engine_event e LEFT JOIN engine_step s "
        "ON s.id = e.consumed_by_id WHERE e.execution_id = %s ORDER BY e.id",
        execution_id,
    )


def owner_of(env: dict[str, str], execution_id: str, workers: list[Worker]) -> Worker:
    """The started worker that holds the execution now."""
    [(owner,)] = query(env, "SELECT owner FROM engine_execution WHERE id = %s", execution_id)
    assert owner, f"execution {execution_id} is held by no worker"
    pid = int(owner.split(":")[1])
    [worker] = [worker for worker in workers if worker.pid == pid]
    return worker


def item_runs(parent_id: str) -> dict[int, int]:
    runs: dict[int, int] = {}
    for line in calls(parent_id):
        if line.startswith("item:"):
            index = int(line.removeprefix("item:"))
            runs[index] = runs.get(index, 0) + 1
    return runs


def test_two_hundred_children_on_three_workers_wake_their_parent_once(
    scaleout_env, start_worker, capsys
):
    for _ in range(3):
        start_worker(threads=4, **scaleout_env)
    values = [(n * 37) % 200 for n in range(200)]
    began = time.monotonic()
    parent_id = trigger(scaleout_env, "MANY_ITEMS", {"values": values})
    execution = ended(scaleout_env, parent_id, timeout=80)
    elapsed = time.monotonic() - began
    with capsys.disabled():
        print(
            f"\ninvoke_many: 200 children on PostgreSQL + Redis, 3 workers x 4 threads: "
            f"{elapsed:.1f} s (with the trigger command's start-up)"
        )
    assert execution["status"] == "completed"
    assert execution["output"] == [value * 2 for value in values]
    assert execution["run_count"] == 2  # started, then woken once by the last child
    assert {status for _, status in children(scaleout_env, parent_id)} == {"completed"}
    assert item_runs(parent_id) == dict.fromkeys(range(200), 1)


def test_a_kill_while_children_run_loses_none_on_postgres(scaleout_env, start_worker):
    workers = [start_worker(threads=4, **scaleout_env) for _ in range(3)]
    parent_id = trigger(scaleout_env, "MANY_ITEMS", {"values": list(range(200)), "ms": 30})
    wait_for(lambda: len(item_runs(parent_id)) >= 60)
    workers[1].kill()
    execution = ended(scaleout_env, parent_id, timeout=60)
    assert execution["status"] == "completed"
    assert execution["output"] == [v * 2 for v in range(200)]
    assert execution["run_count"] == 2
    runs = item_runs(parent_id)
    assert set(runs) == set(range(200))
    again = [index for index, count in runs.items() if count > 1]
    assert len(again) <= 4  # at most the killed worker's four threads were cut off
    ids = [child_id for child_id, _ in children(scaleout_env, parent_id)]
    for index in again:
        assert attempts(scaleout_env, ids[index], "double") == [
            (1, "failed", "WorkerLost"),
            (2, "completed", ""),
        ]


def test_an_event_is_delivered_once_across_a_kill_on_postgres(scaleout_env, start_worker):
    workers = [start_worker(threads=2, **scaleout_env) for _ in range(2)]
    gate = trigger(scaleout_env, "GATE", {"pause": 60})
    wait_for(lambda: step_status(scaleout_env, gate, "first") == "waiting")
    send_event(scaleout_env, gate, "p1")
    wait_for(lambda: calls(gate) == ["request", "act:p1"])  # delivered; the next step runs
    owner_of(scaleout_env, gate, workers).kill()
    send_event(scaleout_env, gate, "p2")  # kept for the second wait
    execution = ended(scaleout_env, gate)
    assert execution["status"] == "completed" and execution["output"] == ["p1", "p2"]
    assert calls(gate) == ["request", "act:p1", "act:p1", "done:p2"]
    assert consumers(scaleout_env, gate) == [("p1", "first"), ("p2", "second")]
    assert attempts(scaleout_env, gate, "act") == [
        (1, "failed", "WorkerLost"),
        (2, "completed", ""),
    ]


def test_events_racing_workers_are_each_delivered_once_on_postgres(scaleout_env, start_worker):
    for _ in range(3):
        start_worker(threads=2, **scaleout_env)
    gates = [trigger(scaleout_env, "GATE", {}) for _ in range(6)]
    # one process sends two events to each from four threads, as the workers reach the waits
    code = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from django.db import connection\n"
        "from engine import events\n"
        f"gates = {gates!r}\n"
        "def send(job):\n"
        "    try:\n"
        "        events.send_event(job[0], 'go', job[1])\n"
        "    finally:\n"
        "        connection.close()\n"
        "jobs = [(g, f'{n}-{label}') for n, g in enumerate(gates) for label in 'xy']\n"
        "with ThreadPoolExecutor(4) as pool:\n"
        "    list(pool.map(send, jobs))\n"
    )
    manage(scaleout_env, "shell", "-c", code)
    for gate in gates:
        execution = ended(scaleout_env, gate)
        sent = consumers(scaleout_env, gate)
        assert [name for _, name in sent] == ["first", "second"]
        first, second = (payload for payload, _ in sent)
        assert execution["status"] == "completed" and execution["output"] == [first, second]
        assert calls(gate) == ["request", f"act:{first}", f"done:{second}"]


def test_sleep_until_survives_a_restart_on_postgres(scaleout_env, start_worker):
    import redis

    first = start_worker(**scaleout_env)
    until = datetime.now(UTC) + timedelta(seconds=5)
    execution_id = trigger(scaleout_env, "DATED_SLEEP", {"until": until.isoformat()})
    wait_for(lambda: step_status(scaleout_env, execution_id, "sleep:1") == "sleeping")
    first.kill()
    redis.Redis.from_url(REDIS).flushdb()  # the wake-up message is lost with the restart
    start_worker(**scaleout_env)
    assert ended(scaleout_env, execution_id)["output"] == "woke"
    [(after,)] = query(
        scaleout_env,
        "SELECT started_at FROM engine_step WHERE execution_id = %s AND name = 'after'",
        execution_id,
    )
    assert after >= until
    assert calls(execution_id) == ["before", "after"]


def test_a_kill_in_the_middle_of_a_parallel_step_on_postgres(scaleout_env, start_worker):
    first = start_worker(**scaleout_env)
    execution_id = trigger(scaleout_env, "SPLIT", {"slow": ["c", "d"]})
    wait_for(
        lambda: (
            step_status(scaleout_env, execution_id, "fan[a]") == "completed"
            and step_status(scaleout_env, execution_id, "fan[b]") == "completed"
            and {"c", "d"} <= set(calls(execution_id))
        )
    )
    first.kill()
    start_worker(**scaleout_env)
    execution = ended(scaleout_env, execution_id)
    assert execution["output"] == {"a": "A", "b": "B", "c": "C", "d": "D"}
    assert sorted(calls(execution_id)) == ["a", "after", "b", "c", "c", "d", "d"]
    for key in "ab":
        assert attempts(scaleout_env, execution_id, f"fan[{key}]") == [(1, "completed", "")]
    for key in "cd":
        assert attempts(scaleout_env, execution_id, f"fan[{key}]") == [
            (1, "failed", "WorkerLost"),
            (2, "completed", ""),
        ]


def test_one_child_per_level_across_a_kill_then_a_recursive_cancel_on_postgres(
    scaleout_env, start_worker
):
    workers = [start_worker(threads=2, **scaleout_env) for _ in range(2)]
    top = trigger(scaleout_env, "NESTED_INVOKE", {"depth": 1, "seconds": 60})
    [(middle, _)] = wait_for(lambda: children(scaleout_env, top), interval=0.2)
    [(leaf, _)] = wait_for(lambda: children(scaleout_env, middle), interval=0.2)
    wait_for(lambda: calls(leaf) == ["first", "slow"])
    owner_of(scaleout_env, leaf, workers).kill()  # the leaf resumes on the other worker
    wait_for(lambda: calls(leaf) == ["first", "slow", "slow"], timeout=20)
    manage(
        scaleout_env,
        "shell",
        "-c",
        f"from engine import runtime; runtime.cancel_execution({top!r})",
    )
    ended_ids = [top, middle, leaf]
    assert set(all_ended(scaleout_env, ended_ids).values()) == {"cancelled"}
    assert children(scaleout_env, top) == [(middle, "cancelled")]
    assert children(scaleout_env, middle) == [(leaf, "cancelled")]
    assert step_status(scaleout_env, top, "inner") == "cancelled"
    assert calls(top) == calls(middle) == []  # no `after` ran
    assert attempts(scaleout_env, leaf, "slow") == [
        (1, "failed", "WorkerLost"),
        (2, "failed", "Cancelled"),
    ]
    for worker in workers:  # the leaf's second call still waits out its minute
        if worker.process.poll() is None:
            worker.kill()
