"""Concurrency limits, one run at a time in this process: who holds a slot, who waits, and how
every end (completed, failed, cancelled, a lost hand-off) passes the slot to the oldest waiter."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from engine import runtime, workers
from engine.bindings import current_env
from engine.concurrency import group_key
from engine.config import BindingConfig
from engine.models import Execution, SlotStatus
from tests.workflows.limits import slot_notes

pytestmark = pytest.mark.django_db(transaction=True)


def start(binding: str, input: object = None) -> str:
    return runtime.trigger(binding, input).execution_id


def run(execution_id: object, after: float = 0) -> Execution:
    runtime.run_execution(str(execution_id), now=timezone.now() + timedelta(seconds=after))
    return Execution.objects.get(id=execution_id)


def queued() -> list[str]:
    return [task.args[0] for task in HUEY.pending()]


def slots(*ids: str) -> list[str]:
    rows = dict(Execution.objects.filter(id__in=ids).values_list("id", "slot"))
    return [rows[Execution._meta.pk.to_python(each)] for each in ids]


def is_waiting(execution_id: str) -> bool:
    execution = Execution.objects.get(id=execution_id)
    return (execution.status, execution.slot, execution.wake_at, execution.owner) == (
        "running",
        SlotStatus.WAITING,
        None,
        None,
    )


def test_the_first_n_take_slots_and_the_rest_wait_unqueued_and_unclaimable():
    first, second, third = (start("LIMITED_ONE", {}) for _ in range(3))
    assert slots(first, second, third) == ["holding", "waiting", "waiting"]
    assert queued() == [first]  # waiters are not queued: no message, no worker thread
    assert is_waiting(second) and is_waiting(third)
    assert run(second).run_count == 0  # a stray message for a waiter claims nothing
    assert slot_notes() == []


def test_an_end_hands_the_slot_to_the_oldest_waiter_and_queues_it_at_once():
    first, second, third = (start("LIMITED_ONE", {}) for _ in range(3))
    HUEY.flush()
    assert run(first).status == "completed"
    assert slots(second, third) == ["holding", "waiting"]
    assert queued() == [second]  # in the transaction that ended the first: no polling
    HUEY.flush()
    assert run(second).status == "completed"
    assert queued() == [third]
    assert run(third).status == "completed"
    order = [execution_id for what, execution_id, _ in slot_notes() if what == "start"]
    assert order == [first, second, third]  # oldest first


def test_slots_are_counted_per_value_of_the_key_and_a_missing_key_is_one_group():
    a1, a2, a3 = (start("LIMITED", {"customer": "a"}) for _ in range(3))
    b1 = start("LIMITED", {"customer": "b"})
    none1, none2 = start("LIMITED", {}), start("LIMITED", {"customer": None})
    none3 = start("LIMITED", {"other": 1})
    assert slots(a1, a2, a3, b1) == ["holding", "holding", "waiting", "holding"]
    assert slots(none1, none2, none3) == ["holding", "holding", "waiting"]
    keys = dict(Execution.objects.values_list("id", "concurrency_key"))
    assert {keys[Execution._meta.pk.to_python(each)] for each in (a1, b1, none1)} == {
        '"a"',
        '"b"',
        "null",
    }
    HUEY.flush()
    run(b1)
    assert slots(a3, none3) == ["waiting", "waiting"] and queued() == []  # another group
    run(a1)
    assert slots(a3) == ["holding"] and queued() == [a3]


def test_the_key_is_a_dotted_path_and_long_values_are_hashed():
    nested = BindingConfig(binding="N", name="n", concurrency=1, concurrency_key="customer.id")
    assert group_key(nested, {"customer": {"id": 7}}) == "7"
    assert group_key(nested, {"customer": 7}) == "null"  # not a mapping: missing
    assert group_key(nested, None) == "null"
    assert group_key(nested, {"customer": {"id": {"b": 1, "a": 2}}}) == '{"a":2,"b":1}'
    assert group_key(nested, {"customer": {"id": "x" * 500}}).startswith("sha256:")
    assert len(group_key(nested, {"customer": {"id": "x" * 500}})) <= 255
    unkeyed = BindingConfig(binding="U", name="u", concurrency=1)
    assert group_key(unkeyed, {"customer": 1}) == ""
    first = start("LIMITED_NESTED", {"customer": {"id": 1}})
    other = start("LIMITED_NESTED", {"customer": {"id": 2}})
    same = start("LIMITED_NESTED", {"customer": {"id": 1}})
    assert slots(first, other, same) == ["holding", "holding", "waiting"]


def test_a_sleeping_holder_keeps_its_slot_until_it_ends():
    sleeper = start("LIMITED_ONE", {"sleep_ms": 1000})
    waiter = start("LIMITED_ONE", {})
    assert run(sleeper).status == "running"  # asleep, held by no worker: still a holder
    assert slots(sleeper, waiter) == ["holding", "waiting"] and is_waiting(waiter)
    assert run(sleeper, after=2).status == "completed"
    assert slots(waiter) == ["holding"]


def test_a_failure_hands_the_slot_on():
    failing = start("LIMITED_ONE", {"fail": True})
    waiter = start("LIMITED_ONE", {})
    assert run(failing).status == "failed"
    assert slots(waiter) == ["holding"] and run(waiter).status == "completed"


def test_cancelling_a_waiter_frees_nothing_and_cancelling_a_holder_hands_its_slot_on():
    holder, first_waiter, second_waiter = (start("LIMITED_ONE", {}) for _ in range(3))
    HUEY.flush()
    runtime.cancel_execution(first_waiter)
    assert slots(holder, second_waiter) == ["holding", "waiting"] and queued() == []
    runtime.cancel_execution(holder)
    assert slots(second_waiter) == ["holding"] and queued() == [second_waiter]
    assert run(second_waiter).status == "completed"
    assert Execution.objects.get(id=first_waiter).status == "cancelled"


def test_cancelling_a_parent_hands_on_the_slots_its_children_held():
    parent = start("LIMITED_PARENT", {"children": 3})
    assert run(parent).status == "running"
    children = list(Execution.objects.filter(parent_id=parent).order_by("parent_index"))
    assert [child.slot for child in children] == ["holding", "waiting", "waiting"]
    other = start("LIMITED_ONE", {})
    assert slots(other) == ["waiting"]
    runtime.cancel_execution(parent)  # the children end with it, in one transaction
    assert slots(other) == ["holding"]


def test_children_of_a_limited_binding_wait_for_slots_and_the_parent_completes():
    parent = start("LIMITED_PARENT", {"children": 3})
    run(parent)
    for _ in range(3):
        [holder] = Execution.objects.running().filter(parent_id=parent, slot="holding")
        assert run(holder.id).status == "completed"
    assert run(parent).status == "completed"
    assert Execution.objects.get(id=parent).output == [None, None, None]


def test_the_sweep_repairs_a_lost_hand_off(caplog):
    holder, waiter = start("LIMITED_ONE", {}), start("LIMITED_ONE", {})
    # The holder ended without handing its slot on (as if its process died mid-way).
    Execution.objects.filter(id=holder).update(status="completed", wake_at=None)
    HUEY.flush()
    runtime.sweep()
    assert slots(waiter) == ["holding"] and waiter in queued()
    HUEY.flush()
    caplog.clear()
    runtime.sweep()
    # Handed once: the second sweep finds no free slot. The waiter, due and its message
    # lost, gets one again (for when it is overdue by the sweep's grace), nothing else does.
    assert "concurrency slot" not in caplog.text
    assert queued() == [waiter]


def test_a_waiter_of_a_binding_whose_limit_was_removed_is_released_by_the_sweep():
    execution = Execution.objects.create(
        binding="DATA_FLOW",
        workflow="data_processing",
        input={"action": "double", "value": 1},
        created_at=timezone.now(),
        slot=SlotStatus.WAITING,
    )
    runtime.sweep()
    assert run(execution.id).status == "completed"


@pytest.fixture
def calling_process() -> Iterator[None]:
    """`.run()` makes this process a worker with a heartbeat: stopped after the test."""
    yield
    workers.current().stop()
    workers._current = None  # a stopped worker runs no steps: later tests get a fresh one


def test_run_here_runs_when_a_slot_is_free_and_otherwise_returns_it_waiting(calling_process):
    env = current_env()
    ran = env.LIMITED_ONE.run({})
    assert ran.status == "completed"
    holder = start("LIMITED_ONE", {"sleep_ms": 1000})
    run(holder)
    HUEY.flush()
    waiting = env.LIMITED_ONE.run({})
    assert waiting.status == "running" and is_waiting(waiting.execution_id)
    assert not [note for note in slot_notes() if note[1] == waiting.execution_id]
    run(holder, after=2)
    assert queued() == [waiting.execution_id]  # a worker goes on with it


def test_a_waiter_past_its_timeout_fails_without_running_or_taking_a_slot():
    holder = start("LIMITED_BOUNDED", {"sleep_ms": 60_000})
    run(holder)
    waiter = start("LIMITED_BOUNDED", {})
    execution = Execution.objects.get(id=waiter)
    assert execution.wake_at == execution.created_at + timedelta(seconds=2)  # due at its timeout
    assert run(waiter).run_count == 0  # not before it
    failed = run(waiter, after=3)
    assert failed.status == "failed" and failed.error["type"] == "Timeout"
    assert not [note for note in slot_notes() if note[1] == waiter]
    assert slots(holder) == ["holding"]


def test_metrics_count_the_executions_waiting_for_a_slot(client):
    holder = start("LIMITED_ONE", {"sleep_ms": 60_000})
    run(holder)  # asleep: it keeps its slot, and counts as sleeping
    start("LIMITED_ONE", {})
    start("LIMITED_ONE", {})
    text = client.get("/metrics").content.decode()
    assert 'ployweb_executions_waiting{reason="concurrency"} 2.0' in text
    assert 'ployweb_executions_waiting{reason="sleep"} 1.0' in text


def test_the_dashboard_says_an_execution_waits_for_a_concurrency_slot(client):
    holder = start("LIMITED", {"customer": "acme", "sleep_ms": 60_000})
    run(holder)
    waiters = [start("LIMITED", {"customer": "acme"}) for _ in range(2)]
    listing = client.get("/?workflow=limited").content.decode()
    assert listing.count("waiting for a concurrency slot") == 1  # the other one holds a slot
    page = client.get(f"/executions/{waiters[1]}/").content.decode()
    assert (
        "waiting for a concurrency slot" in page
        and "No step has run yet: waiting for a concurrency slot." in page
    )
    assert "(&quot;acme&quot;)" in page  # the key it counts under
    assert (
        "waiting for a concurrency slot"
        not in client.get(f"/executions/{holder}/").content.decode()
    )
    runtime.cancel_execution(waiters[1])
    assert (
        "waiting for a concurrency slot"
        not in client.get(f"/executions/{waiters[1]}/").content.decode()
    )


def test_the_api_says_whether_an_execution_waits_for_or_holds_a_slot(client):
    holder, waiter = start("LIMITED_ONE", {}), start("LIMITED_ONE", {})
    plain = start("DATA_FLOW", {"action": "double", "value": 1})
    slot_of = {
        each: client.get(f"/api/executions/{each}").json()["concurrencySlot"]
        for each in (holder, waiter, plain)
    }
    assert slot_of == {holder: "holding", waiter: "waiting", plain: None}
    listed = client.get("/api/executions?workflow=limited").json()["items"]
    assert sorted(item["concurrencySlot"] for item in listed) == ["holding", "waiting"]


def test_triggers_racing_on_many_threads_admit_no_more_than_the_limit():
    def one(n: int) -> str:
        try:
            return start("LIMITED", {"customer": "race", "n": n})
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(one, range(40)))
    assert len(set(ids)) == 40
    holding = Execution.objects.filter(binding="LIMITED", slot="holding").values_list("id")
    assert len(holding) == 2
    assert sorted(queued()) == sorted(str(each) for (each,) in holding)  # only they are queued
