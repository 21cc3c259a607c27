"""Concurrency limits on PostgreSQL and Redis with several `runhuey` processes: the group's
advisory lock keeps every key at its limit while workers on separate connections race, and
a kill -9 of the holder's worker keeps the slot until its execution recovers.

Skipped, with the reason, where either server is not reachable on 127.0.0.1."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import redis_url, wait_for
from tests.test_concurrency_workers import (
    PATIENT,
    check_prompt_hand_offs,
    intervals,
    most_at_once,
)
from tests.test_scaleout import all_ended, manage, reachable
from tests.test_scaleout import scaleout_env as shared_scaleout_env  # noqa: F401
from tests.test_waits_scaleout import owner_of, query
from tests.workflows.limits import work_calls

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


def trigger_many(env: dict[str, str], binding: str, inputs: list[object]) -> list[str]:
    """Trigger them all from one process, quickly, while the workers already run."""
    code = (
        "import json; from engine import runtime; "
        f"print(json.dumps([runtime.trigger({binding!r}, each).execution_id "
        f"for each in json.loads({json.dumps(inputs)!r})]))"
    )
    return json.loads(manage(env, "shell", "-c", code).splitlines()[-1])


def test_sixty_executions_over_three_keys_on_postgres_never_exceed_two_per_key(
    scaleout_env, start_worker
):
    for _ in range(3):
        start_worker(threads=4, **PATIENT, **scaleout_env)
    customers = [f"customer-{n % 3}" for n in range(60)]
    inputs = [{"customer": customer, "seconds": 0.3} for customer in customers]
    # Three processes trigger at once, racing each other and the workers' hand-offs.
    with ThreadPoolExecutor(max_workers=3) as pool:
        batches = list(
            pool.map(lambda part: trigger_many(scaleout_env, "LIMITED", inputs[part::3]), range(3))
        )
    ids = [None] * 60
    for part, batch in enumerate(batches):
        ids[part::3] = batch
    statuses = wait_for(lambda: all_ended(scaleout_env, ids), timeout=180, interval=0.5)
    assert set(statuses.values()) == {"completed"}
    assert all(work_calls(execution_id) == 1 for execution_id in ids)
    spans = intervals()
    at_once = {}
    for customer in set(customers):
        mine = [spans[each] for each, who in zip(ids, customers, strict=True) if who == customer]
        assert len(mine) == 20
        at_once[customer] = most_at_once(mine)
        check_prompt_hand_offs(mine)
    assert max(at_once.values()) == 2, at_once  # the limit was reached, and never passed
    [(held,)] = query(
        scaleout_env, "SELECT count(*) FROM engine_execution WHERE status = 'running'"
    )
    assert held == 0


def test_a_killed_worker_keeps_its_slot_on_postgres_until_its_execution_recovers(
    scaleout_env, start_worker
):
    workers = [start_worker(threads=2, **scaleout_env) for _ in range(2)]
    [holder] = trigger_many(scaleout_env, "LIMITED_ONE", [{"pause": 60}])
    wait_for(lambda: work_calls(holder) == 1)
    waiters = trigger_many(scaleout_env, "LIMITED_ONE", [{"seconds": 0.2}] * 4)
    owner_of(scaleout_env, holder, workers).kill()
    statuses = wait_for(lambda: all_ended(scaleout_env, [holder, *waiters]), timeout=90)
    assert set(statuses.values()) == {"completed"}
    assert work_calls(holder) == 2 and all(work_calls(each) == 1 for each in waiters)
    spans = intervals()
    everyone = [spans[each] for each in [holder, *waiters]]
    assert most_at_once(everyone) == 1
    assert all(spans[each][0] > spans[holder][1] for each in waiters)
    check_prompt_hand_offs(everyone)
    assert sorted(waiters, key=lambda each: spans[each][0]) == waiters  # oldest first


def test_triggers_racing_on_many_connections_admit_no_more_than_the_limit(scaleout_env):
    # Eight threads (eight connections) of two processes trigger into one group at once, with
    # no worker: without the group's lock each would count the others' uncommitted rows as
    # absent and take a slot.
    code = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from django.db import connection\n"
        "from engine import runtime\n"
        "def one(n):\n"
        "    try:\n"
        "        return runtime.trigger('LIMITED', {'customer': 'race', 'n': n}).execution_id\n"
        "    finally:\n"
        "        connection.close()\n"
        "with ThreadPoolExecutor(8) as pool:\n"
        "    print(len(list(pool.map(one, range(40)))))\n"
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(pool.map(lambda _: manage(scaleout_env, "shell", "-c", code), range(2)))
    assert [count.splitlines()[-1] for count in counts] == ["40", "40"]
    rows = query(
        scaleout_env,
        "SELECT slot, count(*) FROM engine_execution WHERE binding = 'LIMITED' GROUP BY slot",
    )
    assert dict(rows) == {"holding": 2, "waiting": 78}
