"""Concurrency limits on real `manage.py runhuey` processes (SQLite database and queue): many
executions over a few keys on three workers, and a kill -9 of the worker holding a slot.

Each execution notes when it started and ended in one shared file (tests/workflows/limits.py),
so each test proves from the notes how many ran at once per key and how soon a freed slot was
taken."""

from __future__ import annotations

import statistics
from collections import defaultdict

import pytest

from engine import runtime
from engine.models import Execution
from tests.conftest import wait_for
from tests.workflows.limits import slot_notes, work_calls

pytestmark = pytest.mark.django_db(transaction=True)

# A slot freed while others wait must be taken within this long: far below the sweep's
# period (60 s), so only the hand-off in the ending transaction can meet it; and typically
# within a second (a hand-off is a few transactions and a queue message).
SLOWEST_HAND_OFF_SECONDS = 10.0
TYPICAL_HAND_OFF_SECONDS = 2.0
# Under load, workers whose heartbeats the loaded machine delays past the tests' 2 s timeout
# would be declared dead, and their steps rightly run again: not what the load test is about.
PATIENT = {"PLOY_WORKER_TIMEOUT_SECONDS": "10"}


def intervals() -> dict[str, tuple[float, float]]:
    """Each execution's (first start, last end) from the notes."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for what, execution_id, at in slot_notes():
        if what == "start":
            starts[execution_id] = min(at, starts.get(execution_id, at))
        else:
            ends[execution_id] = max(at, ends.get(execution_id, at))
    # Executions of other tests in this session may have notes without an end (cancelled).
    return {each: (starts[each], ends[each]) for each in starts if each in ends}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    moments = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, change in moments:  # an end sorts before a start at the same instant
        running += change
        most = max(most, running)
    return most


def hand_offs(spans: list[tuple[float, float]]) -> list[float]:
    """For each end while some execution still waited, the time until the next start."""
    starts = sorted(start for start, _ in spans)
    gaps = []
    for _, end in spans:
        later = [start for start in starts if start > end]
        if later:
            gaps.append(later[0] - end)
    return sorted(gaps)


def check_prompt_hand_offs(spans: list[tuple[float, float]]) -> None:
    """Freed slots were taken at once: every gap far below the sweep's period, and the typical
    one below a poller's delay (generous bounds: the machine may be loaded)."""
    gaps = hand_offs(spans)
    assert gaps, "no execution had to wait: the test proves nothing"
    assert max(gaps) < SLOWEST_HAND_OFF_SECONDS, gaps
    assert statistics.median(gaps) < TYPICAL_HAND_OFF_SECONDS, gaps


def ended(ids: list[str], timeout: float) -> dict[str, str]:
    def all_ended() -> dict[str, str] | None:
        rows = dict(Execution.objects.filter(id__in=ids).values_list("id", "status"))
        statuses = {str(key): value for key, value in rows.items()}
        return statuses if "running" not in statuses.values() else None

    return wait_for(all_ended, timeout=timeout, interval=0.2)


def by_customer(ids: list[str], customers: list[str]) -> dict[str, list[tuple[float, float]]]:
    spans = intervals()
    grouped: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for execution_id, customer in zip(ids, customers, strict=True):
        grouped[customer].append(spans[execution_id])
    return grouped


def test_sixty_executions_over_three_keys_on_three_workers_never_exceed_two_per_key(
    start_worker,
):
    for _ in range(3):
        start_worker(threads=4, **PATIENT)
    customers = [f"customer-{n % 3}" for n in range(60)]
    ids = [
        runtime.trigger("LIMITED", {"customer": customer, "seconds": 0.3}).execution_id
        for customer in customers
    ]
    statuses = ended(ids, timeout=180)
    assert set(statuses.values()) == {"completed"}
    assert all(work_calls(execution_id) == 1 for execution_id in ids)
    grouped = by_customer(ids, customers)
    assert {customer: len(spans) for customer, spans in grouped.items()} == {
        "customer-0": 20,
        "customer-1": 20,
        "customer-2": 20,
    }
    at_once = {customer: most_at_once(spans) for customer, spans in grouped.items()}
    assert max(at_once.values()) == 2, at_once  # the limit was reached, and never passed
    for spans in grouped.values():
        check_prompt_hand_offs(spans)
    # no slot is left held or waited for
    assert not Execution.objects.running().filter(id__in=ids).exists()


def owner_pid(execution_id: str) -> int:
    owner = Execution.objects.get(id=execution_id).owner
    assert owner, f"execution {execution_id} is held by no worker"
    return int(owner.split(":")[1])


def test_a_killed_worker_keeps_its_slot_until_its_execution_recovers_then_waiters_go(
    start_worker,
):
    workers = [start_worker(threads=2), start_worker(threads=2)]
    holder = runtime.trigger("LIMITED_ONE", {"pause": 60}).execution_id
    wait_for(lambda: work_calls(holder) == 1)  # inside its step body, holding the slot
    waiters = [runtime.trigger("LIMITED_ONE", {"seconds": 0.2}).execution_id for _ in range(4)]
    [victim] = [worker for worker in workers if worker.pid == owner_pid(holder)]
    victim.kill()
    # Recovered elsewhere after the worker timeout (2 s): the step runs again, then the end.
    statuses = ended([holder, *waiters], timeout=90)
    assert set(statuses.values()) == {"completed"}
    assert work_calls(holder) == 2 and all(work_calls(each) == 1 for each in waiters)
    spans = intervals()
    assert most_at_once([spans[each] for each in [holder, *waiters]]) == 1
    holder_end = spans[holder][1]
    assert all(spans[each][0] > holder_end for each in waiters)  # none ran during the outage
    check_prompt_hand_offs([spans[each] for each in [holder, *waiters]])
    order = sorted(waiters, key=lambda each: spans[each][0])
    assert order == waiters  # oldest first


def test_waiters_hold_no_worker_thread(start_worker):
    start_worker(threads=1)
    holder = runtime.trigger("LIMITED_ONE", {"sleep_ms": 8000}).execution_id
    waiters = [runtime.trigger("LIMITED_ONE", {}).execution_id for _ in range(3)]
    wait_for(lambda: [what for what, each, _ in slot_notes() if each == holder] == ["start"])
    # The only thread is free while the holder sleeps and three wait: other work runs.
    other = runtime.trigger("DATA_FLOW", {"action": "double", "value": 2}).execution_id
    assert ended([other], timeout=30) == {other: "completed"}
    assert set(Execution.objects.filter(id__in=waiters).values_list("slot", flat=True)) == {
        "waiting"
    }
    assert ended([holder, *waiters], timeout=60) == dict.fromkeys([holder, *waiters], "completed")
