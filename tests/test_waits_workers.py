"""Waiting and composition on real `manage.py runhuey` processes (SQLite database and queue):
events, sleep_until, invoke, invoke_many and parallel, each with a kill -9 in the middle.

Step bodies count their calls in files (tests/workflows/composition.py), so each test proves
how often a body ran across processes, crashes and restarts."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from engine import events, runtime
from engine.errors import ExecutionAlreadyFinished
from engine.models import Event, Execution, Step
from tests.conftest import ROOT, wait_for, worker_environment
from tests.workflows.app import calls

pytestmark = pytest.mark.django_db(transaction=True)


def start(binding: str, input: object = None) -> str:
    return runtime.trigger(binding, input).execution_id


def ended(execution_id: object, timeout: float = 30) -> Execution:
    def finished() -> Execution | None:
        execution = Execution.objects.get(id=execution_id)
        return execution if execution.is_finished else None

    return wait_for(finished, timeout=timeout, interval=0.1)


def step(execution_id: object, name: str) -> Step:
    return Step.objects.get(execution_id=execution_id, name=name)


def has_status(execution_id: object, name: str, status: str) -> bool:
    return Step.objects.filter(execution_id=execution_id, name=name, status=status).exists()


def attempts(execution_id: object, name: str) -> list[tuple[int, str, str]]:
    rows = step(execution_id, name).attempts.order_by("number")
    return [(a.number, a.status, a.error_type) for a in rows]


def children(parent_id: object) -> list[Execution]:
    return list(Execution.objects.filter(parent_id=parent_id).order_by("parent_index"))


def consumers(execution_id: object) -> list[tuple[object, str | None]]:
    """Each event sent to the execution, oldest first: its payload and the step it went to."""
    rows = Event.objects.filter(execution_id=execution_id).order_by("id")
    return [(event.payload, event.consumed_by and event.consumed_by.name) for event in rows]


# -- wait_for_event ---------------------------------------------------------------------------


def test_a_wait_holds_no_worker_thread_and_an_event_from_the_api_completes_it(start_worker, client):
    start_worker(threads=1)
    gate = start("GATE", {})
    wait_for(lambda: has_status(gate, "first", "waiting"))
    # the worker's only thread is free: another execution runs to its end meanwhile
    quick = start("DATA_FLOW", {"action": "double", "value": 1})
    assert ended(quick).status == "completed"
    waiting = Execution.objects.get(id=gate)
    assert (waiting.status, waiting.owner, waiting.wake_at) == ("running", None, None)

    url = f"/api/executions/{gate}/events"
    answer = client.post(url, {"type": "go", "payload": "yes"}, "application/json")
    assert answer.status_code == 202
    wait_for(lambda: has_status(gate, "second", "waiting"))
    answer = client.post(url, {"type": "go", "payload": "again"}, "application/json")
    assert answer.status_code == 202
    execution = ended(gate)
    assert execution.status == "completed" and execution.output == ["yes", "again"]
    assert calls(gate) == ["request", "act:yes", "done:again"]
    assert consumers(gate) == [("yes", "first"), ("again", "second")]
    assert execution.run_count == 3  # the start, then one run per event: no polling


def test_events_sent_before_the_waits_are_kept_and_delivered_oldest_first(start_worker):
    gate = start("GATE", {})
    for payload in ("early", "later", "spare"):
        events.send_event(gate, "go", payload)
    start_worker()
    execution = ended(gate)
    assert execution.status == "completed" and execution.output == ["early", "later"]
    assert calls(gate) == ["request", "act:early", "done:later"]
    assert consumers(gate) == [("early", "first"), ("later", "second"), ("spare", None)]


def test_each_event_is_delivered_once_while_workers_race(start_worker):
    for _ in range(3):
        start_worker(threads=2)
    gates = [start("GATE", {}) for _ in range(12)]

    def send(job: tuple[str, str]) -> None:
        try:
            events.send_event(job[0], "go", job[1])
        finally:
            connection.close()

    # two events per execution from four threads at once, while the workers reach the waits
    jobs = [(gate, f"{n}-{label}") for n, gate in enumerate(gates) for label in ("x", "y")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(send, jobs))
    for gate in gates:
        execution = ended(gate)
        sent = consumers(gate)
        assert [name for _, name in sent] == ["first", "second"]  # each one once, oldest first
        first, second = (payload for payload, _ in sent)
        assert execution.status == "completed" and execution.output == [first, second]
        assert calls(gate) == ["request", f"act:{first}", f"done:{second}"]


def test_a_kill_between_the_delivery_and_the_next_step_delivers_nothing_twice(start_worker):
    first_worker = start_worker()
    gate = start("GATE", {"pause": 60})
    wait_for(lambda: has_status(gate, "first", "waiting"))
    events.send_event(gate, "go", "p1")
    wait_for(lambda: calls(gate) == ["request", "act:p1"])  # delivered; the next step runs
    first_worker.kill()
    events.send_event(gate, "go", "p2")  # kept for the second wait, not the replayed first
    start_worker()
    execution = ended(gate)
    assert execution.status == "completed" and execution.output == ["p1", "p2"]
    assert calls(gate) == ["request", "act:p1", "act:p1", "done:p2"]
    assert consumers(gate) == [("p1", "first"), ("p2", "second")]
    assert attempts(gate, "act") == [(1, "failed", "WorkerLost"), (2, "completed", "")]


def test_a_kill_while_waiting_loses_neither_the_wait_nor_its_timeout(start_worker):
    first_worker = start_worker()
    timed = start("GATE", {"timeout_ms": 3000})
    open_ended = start("GATE", {})
    for gate in (timed, open_ended):
        wait_for(lambda gate=gate: has_status(gate, "first", "waiting"))
    first_worker.kill()
    HUEY.flush()  # the timeout's queued wake-up is lost with the restart
    events.send_event(open_ended, "go", "while-down")
    events.send_event(open_ended, "go", "second")
    start_worker()
    assert ended(open_ended).output == ["while-down", "second"]
    assert calls(open_ended) == ["request", "act:while-down", "done:second"]

    execution = ended(timed)
    wait = step(timed, "first")
    assert execution.status == "failed" and execution.error["type"] == "EventTimeout"
    assert (wait.status, wait.error["type"]) == ("failed", "EventTimeout")
    assert "waited 3000 ms for an event of type 'go'" in wait.error["message"]
    assert wait.finished_at >= wait.started_at + timedelta(seconds=3)  # not early
    assert calls(timed) == ["request"]
    with pytest.raises(ExecutionAlreadyFinished):  # an event after the timeout is refused
        events.send_event(timed, "go", "late")
    assert not Event.objects.filter(execution_id=timed).exists()


# -- sleep_until ------------------------------------------------------------------------------


def test_sleep_until_survives_a_worker_restart(start_worker):
    first_worker = start_worker()
    until = timezone.now() + timedelta(seconds=3)
    execution_id = start("DATED_SLEEP", {"until": until.isoformat()})
    wait_for(lambda: has_status(execution_id, "sleep:1", "sleeping"))
    first_worker.kill()
    HUEY.flush()
    start_worker()
    execution = ended(execution_id)
    assert execution.status == "completed" and execution.output == "woke"
    assert step(execution_id, "sleep:1").wake_at == until
    assert step(execution_id, "after").started_at >= until
    assert calls(execution_id) == ["before", "after"]


# -- invoke -----------------------------------------------------------------------------------


def test_the_parent_is_woken_once_when_its_child_ends(start_worker):
    start_worker()
    start_worker()
    slow = start("INVOKE_ONE", {"binding": "SLOW_CHILD", "input": {"value": 4, "pause": 2}})
    # a child whose step fails once and is retried after its back-off
    flaky = start("INVOKE_ONE", {"binding": "FLAKY", "input": {"failures": 1}})
    assert ended(slow).output == 40
    assert ended(flaky).output == {"ok": True}
    for parent_id in (slow, flaky):
        [child] = children(parent_id)
        assert step(parent_id, "child").child_id == child.id
        assert Execution.objects.get(id=parent_id).run_count == 2  # started, woken: no polling
        assert calls(parent_id) == ["after"]
    [flaky_child] = children(flaky)
    assert attempts(flaky_child.id, "flaky")[0][1:] == ("failed", "RuntimeError")
    assert calls(children(slow)[0].id) == ["work"]


def test_invoke_starts_one_child_however_often_the_parent_crashes(start_worker):
    worker = start_worker()
    parent_id = start(
        "INVOKE_ONE",
        {"binding": "SLOW_CHILD", "input": {"value": 7, "pause": 1}, "pause_after": 60},
    )
    # kill -9 the moment the child exists: the parent may not even have suspended yet
    wait_for(lambda: children(parent_id), interval=0.005)
    worker.kill()
    worker = start_worker()
    [child] = children(parent_id)
    wait_for(lambda: calls(parent_id) == ["after"])  # the child ended, the parent went on
    worker.kill()  # and once more, in the step after the invoke
    start_worker()
    execution = ended(parent_id)
    assert execution.status == "completed" and execution.output == 70
    assert [each.id for each in children(parent_id)] == [child.id]  # still one child
    assert step(parent_id, "child").child_id == child.id
    assert calls(parent_id) == ["after", "after"]
    assert calls(child.id) in (["work"], ["work", "work"])  # it may have been cut off too
    assert 3 <= execution.run_count <= 4


def test_a_failed_child_fails_the_parent_and_on_error_runs_once(start_worker):
    start_worker()
    start_worker()
    parent_id = start("SAD_PARENT")
    execution = ended(parent_id)
    [child] = children(parent_id)
    assert child.status == "failed" and "ValueError: negative value -1" in child.error["message"]
    assert execution.status == "failed" and execution.error["type"] == "StepFailed"
    assert "negative value -1" in execution.error["message"]
    invoke = step(parent_id, "child")
    assert (invoke.status, invoke.error["type"]) == ("failed", "ChildFailed")
    assert invoke.error["childId"] == str(child.id)
    time.sleep(1)  # what a second run of the hook would have done by now
    assert calls(parent_id) == ["before", "on_error:StepFailed"]


def test_cancelling_a_parent_cancels_its_running_children_recursively(start_worker, client):
    start_worker(threads=1)
    top = start("NESTED_INVOKE", {"depth": 1, "seconds": 3})
    middle = wait_for(lambda: children(top))[0]
    leaf = wait_for(lambda: children(middle.id))[0]
    wait_for(lambda: calls(leaf.id) == ["first", "slow"])
    assert client.post(f"/api/executions/{top}/cancel").status_code == 200
    family = Execution.objects.filter(id__in=[top, middle.id, leaf.id])
    assert set(family.values_list("status", flat=True)) == {"cancelled"}
    # the leaf's step body ends on the worker's only thread; its late write changes nothing
    wait_for(lambda: calls(leaf.id)[-1] == "slow-done", timeout=10)
    quick = start("DATA_FLOW", {"action": "double", "value": 1})
    assert ended(quick).status == "completed"  # the thread is free: the leaf's run is over
    assert set(family.values_list("status", flat=True)) == {"cancelled"}
    assert calls(leaf.id) == ["first", "slow", "slow-done"]
    assert calls(top) == calls(middle.id) == []  # no `after` ran
    assert step(top, "inner").status == step(middle.id, "leaf").status == "cancelled"


def test_a_crash_in_the_middle_of_a_cancel_leaves_no_child_running(start_worker):
    start_worker(threads=4)
    parent_id = start("MANY_ITEMS", {"values": list(range(300)), "ms": 200})
    wait_for(lambda: len(children(parent_id)) == 300)
    code = f"from engine import runtime; runtime.cancel_execution({parent_id!r})"
    canceller = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", code],
        cwd=ROOT,
        env=worker_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: Execution.objects.get(id=parent_id).status == "cancelled", interval=0.01)
    finally:
        canceller.kill()  # the web process dies, as gunicorn's timeout or an OOM kill would
        canceller.wait(timeout=10)
    running = Execution.objects.filter(parent_id=parent_id, status="running")
    wait_for(lambda: not running.exists(), timeout=10)
    cancelled_at = Execution.objects.get(id=parent_id).finished_at
    late = Execution.objects.filter(parent_id=parent_id, finished_at__gt=cancelled_at)
    assert set(late.values_list("status", flat=True)) <= {"cancelled"}


# -- invoke_many ------------------------------------------------------------------------------


def item_runs(parent_id: str) -> dict[int, int]:
    runs: dict[int, int] = {}
    for line in calls(parent_id):
        if line.startswith("item:"):
            index = int(line.removeprefix("item:"))
            runs[index] = runs.get(index, 0) + 1
    return runs


def test_a_thousand_children_complete_and_wake_their_parent_once(start_worker, capsys):
    start_worker(threads=4)
    start_worker(threads=4)
    values = [(n * 7919) % 1000 for n in range(1000)]  # a permutation: order shows
    began = time.monotonic()
    parent_id = start("MANY_ITEMS", {"values": values})
    execution = ended(parent_id, timeout=85)
    elapsed = time.monotonic() - began
    with capsys.disabled():
        print(f"\ninvoke_many: 1000 children on SQLite, 2 workers x 4 threads: {elapsed:.1f} s")
    assert execution.status == "completed"
    assert execution.output == [value * 2 for value in values]  # in input order
    assert execution.run_count == 2  # started, then woken once by the last child
    statuses = Execution.objects.filter(parent_id=parent_id).values_list("status", flat=True)
    assert len(statuses) == 1000 and set(statuses) == {"completed"}
    assert item_runs(parent_id) == dict.fromkeys(range(1000), 1)
    assert calls(parent_id).count("total") == 1


def test_a_kill_while_children_run_loses_none_of_them(start_worker):
    victim = start_worker(threads=4)
    start_worker(threads=4)
    values = list(range(300))
    parent_id = start("MANY_ITEMS", {"values": values, "ms": 20})
    wait_for(lambda: len(item_runs(parent_id)) >= 100)
    victim.kill()
    start_worker(threads=4)
    execution = ended(parent_id, timeout=60)
    assert execution.status == "completed" and execution.output == [v * 2 for v in values]
    assert execution.run_count == 2
    runs = item_runs(parent_id)
    assert set(runs) == set(range(300))
    again = [index for index, count in runs.items() if count > 1]
    assert len(again) <= 4  # at most the victim's four threads were cut off, each runs again
    by_index = {child.parent_index: child for child in children(parent_id)}
    for index in again:
        assert attempts(by_index[index].id, "double") == [
            (1, "failed", "WorkerLost"),
            (2, "completed", ""),
        ]


def test_children_left_unqueued_by_a_killed_parent_run_are_queued_by_its_recovery(start_worker):
    """The run that creates the children queues them after its commit, one message each: a
    kill -9 in that loop must not leave the rest to the leader's next sweep, here ten minutes
    away: only the recovery can queue them before the test's deadline, however loaded the
    machine (a deadline near the default sweep's minute missed under load)."""
    no_sweep = {"PLOY_SWEEP_SECONDS": "600"}
    # the oldest worker leads; its one thread stays busy
    leader = start_worker(threads=1, **no_sweep)
    busy = start("SLOW", {"seconds": 30})
    wait_for(lambda: Execution.objects.get(id=busy).owner)
    victim = start_worker(threads=4, **no_sweep)
    parent_id = start("MANY_ITEMS", {"values": list(range(1000))})
    wait_for(lambda: children(parent_id), interval=0.002)
    victim.kill()
    killed_at = time.monotonic()
    HUEY.flush()  # and whatever it had queued is lost with it
    # the kill landed after the commit that created the children, before the parent suspended
    assert Execution.objects.get(id=parent_id).owner is not None
    start_worker(threads=4, **no_sweep)
    execution = ended(parent_id, timeout=90)
    assert execution.status == "completed" and execution.output == [v * 2 for v in range(1000)]
    print(f"\n[measured] kill -9 -> 1,000 children done: {time.monotonic() - killed_at:.1f} s")
    assert set(item_runs(parent_id).values()) == {1}
    leader.kill()


def test_a_failed_child_fails_invoke_many_at_once(start_worker):
    start_worker(threads=4, PLOY_SHUTDOWN_SECONDS="1")
    parent_id = start("MANY_ITEMS", {"values": [-1, 1, 2], "ms": 3000})
    execution = ended(parent_id, timeout=30)
    assert execution.status == "failed" and "negative value -1" in execution.error["message"]
    siblings_done_first = Execution.objects.filter(
        parent_id=parent_id, status="completed", finished_at__lt=execution.finished_at
    )
    assert not siblings_done_first.exists()
    # the step has failed for good: the other children are cancelled, not left to run on
    children = Execution.objects.filter(parent_id=parent_id)
    wait_for(lambda: set(children.values_list("status", flat=True)) == {"failed", "cancelled"})


# -- parallel ---------------------------------------------------------------------------------


def test_parallel_branches_run_at_once_on_a_worker_and_retry_on_their_own(start_worker):
    start_worker(threads=1)
    together = start("FAN_OUT", {"barrier": True})  # a barrier of three: one by one times out
    retried = start("FAN_OUT", {"b_failures": 1})
    assert ended(together).output == {"a": "A", "b": "B", "c": "C"}
    assert ended(retried).output == {"a": "A", "b": "B", "c": "C"}
    assert sorted(calls(retried)) == ["a", "b", "b", "c"]
    assert [status for _, status, _ in attempts(retried, "fan[b]")] == ["failed", "completed"]
    assert len(attempts(retried, "fan[a]")) == len(attempts(retried, "fan[c]")) == 1


def test_a_kill_in_the_middle_of_a_parallel_step_reruns_only_the_cut_off_branches(
    start_worker,
):
    worker = start_worker()
    execution_id = start("SPLIT", {"slow": ["c", "d"]})
    wait_for(
        lambda: (
            has_status(execution_id, "fan[a]", "completed")
            and has_status(execution_id, "fan[b]", "completed")
            and {"c", "d"} <= set(calls(execution_id))
        )
    )
    worker.kill()
    start_worker()
    execution = ended(execution_id)
    assert execution.status == "completed"
    assert execution.output == {"a": "A", "b": "B", "c": "C", "d": "D"}
    assert sorted(calls(execution_id)) == ["a", "after", "b", "c", "c", "d", "d"]
    for key in "ab":
        assert attempts(execution_id, f"fan[{key}]") == [(1, "completed", "")]
    for key in "cd":
        assert attempts(execution_id, f"fan[{key}]") == [
            (1, "failed", "WorkerLost"),
            (2, "completed", ""),
        ]
    assert step(execution_id, "fan").status == "completed"


def test_a_sigterm_in_the_middle_of_a_parallel_step_stops_the_worker_on_time(start_worker):
    """A branch still running at the shutdown timeout holds the process no longer than a plain
    step does; it runs again on the next worker, the finished branches do not."""
    worker = start_worker(PLOY_SHUTDOWN_SECONDS="1")
    execution_id = start("SPLIT", {"slow": ["c"], "seconds": 60})
    wait_for(
        lambda: (
            all(has_status(execution_id, f"fan[{key}]", "completed") for key in "abd")
            and "c" in calls(execution_id)
        )
    )
    signalled_at = time.monotonic()
    worker.terminate()
    assert worker.process.wait(timeout=30) == 0
    assert time.monotonic() - signalled_at < 10  # the shutdown timeout, not the branch's minute
    start_worker()
    execution = ended(execution_id)
    assert execution.output == {"a": "A", "b": "B", "c": "C", "d": "D"}
    assert sorted(calls(execution_id)) == ["a", "after", "b", "c", "c", "d"]
    assert [status for _, status, _ in attempts(execution_id, "fan[c]")] == ["failed", "completed"]
    for key in "abd":
        assert attempts(execution_id, f"fan[{key}]") == [(1, "completed", "")]
