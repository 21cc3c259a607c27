"""Waiting and composition, one run at a time in this process: events, sleep_until, invoke,
invoke_many and cancellation across parents and children (time is passed in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from engine import events, runtime
from engine.errors import ExecutionAlreadyFinished, ExecutionNotFound
from engine.models import Event, Execution, Step
from tests.workflows.app import calls

pytestmark = pytest.mark.django_db(transaction=True)


def start(binding: str, input: object = None) -> str:
    return runtime.trigger(binding, input).execution_id


def run(execution_id: object, after: float = 0) -> Execution:
    runtime.run_execution(str(execution_id), now=timezone.now() + timedelta(seconds=after))
    return Execution.objects.get(id=execution_id)


def step(execution_id: object, name: str) -> Step:
    return Step.objects.get(execution_id=execution_id, name=name)


def queued() -> list[str]:
    return [task.args[0] for task in HUEY.pending()]


def test_a_wait_holds_no_worker_and_an_event_wakes_it():
    execution_id = start("APPROVAL", {})
    assert run(execution_id).status == "running"
    wait = step(execution_id, "approval")
    assert (wait.status, wait.event_type, wait.wake_at) == ("waiting", "approval", None)
    assert Execution.objects.get(id=execution_id).wake_at is None  # no timer: only the event
    HUEY.flush()
    event_id = events.send_event(execution_id, "approval", {"approved": True, "by": "ann"})
    assert queued() == [execution_id]  # made due and queued at once
    execution = run(execution_id)
    assert execution.status == "completed" and execution.output == {"approved": True, "by": "ann"}
    assert calls(execution_id) == ["request", "act"]
    event = Event.objects.get(id=event_id)
    assert event.consumed_by == step(execution_id, "approval") and event.consumed_at
    assert step(execution_id, "approval").output == {"approved": True, "by": "ann"}


def test_an_event_sent_before_the_wait_is_kept_and_delivered_once_oldest_first():
    execution_id = start("TWO_EVENTS")
    events.send_event(execution_id, "note", "a")
    events.send_event(execution_id, "note", "b")
    events.send_event(execution_id, "note", "c")
    execution = run(execution_id)
    assert execution.status == "completed" and execution.output == ["a", "b"]
    unconsumed = Event.objects.filter(execution_id=execution_id, consumed_by__isnull=True)
    assert list(unconsumed.values_list("payload", flat=True)) == ["c"]


def test_a_wait_times_out_with_event_timeout_which_the_handler_may_catch():
    execution_id = start("APPROVAL", {"timeout_ms": 2000})
    assert run(execution_id).status == "running"
    assert step(execution_id, "approval").wake_at is not None
    assert run(execution_id, after=1).status == "running"  # not yet
    execution = run(execution_id, after=3)
    assert execution.status == "completed" and execution.output == "timed out"
    wait = step(execution_id, "approval")
    assert wait.status == "failed" and wait.error["type"] == "EventTimeout"
    assert calls(execution_id) == ["request", "escalate"]
    # a late event changes nothing: the execution has ended
    with pytest.raises(ExecutionAlreadyFinished):
        events.send_event(execution_id, "approval", True)


def test_send_event_refuses_bad_input_and_changes_nothing():
    execution_id = start("APPROVAL", {})
    with pytest.raises(events.InvalidEvent, match="needs a type"):
        events.send_event(execution_id, "", None)
    with pytest.raises(events.InvalidEvent, match="needs a type"):
        events.send_event(execution_id, None, None)
    with pytest.raises(ExecutionNotFound):
        events.send_event("nope", "approval")
    assert Event.objects.count() == 0


def test_sleep_until_is_recorded_like_a_sleep():
    execution_id = start("SLEEP_UNTIL", {"until": "2999-01-01T00:00:00Z"})
    assert run(execution_id).status == "running"
    sleep = step(execution_id, "sleep:1")
    assert sleep.status == "sleeping" and sleep.input == {"until": "2999-01-01T00:00:00+00:00"}
    assert sleep.wake_at == datetime(2999, 1, 1, tzinfo=UTC)
    past = start("SLEEP_UNTIL", {"until": "2000-01-01T00:00:00+00:00"})
    assert run(past).status == "completed"
    bad = start("SLEEP_UNTIL", {"until": "tomorrow"})
    execution = run(bad)
    assert execution.status == "failed" and "is not an ISO 8601 time" in execution.error["message"]


def test_invoke_starts_each_child_once_and_returns_its_output():
    parent_id = start("PARENT", {"value": 1, "values": [2, 3, 4]})
    assert run(parent_id).status == "running"
    [child] = Execution.objects.filter(parent_id=parent_id)
    assert (child.parent_step, child.binding, child.input) == ("one", "DOUBLE", {"value": 1})
    assert step(parent_id, "one").child_id == child.id
    run(parent_id)  # a replay while the child runs starts nothing more
    assert Execution.objects.filter(parent_id=parent_id).count() == 1
    assert run(child.id).output == 2
    # the child's end woke the parent, which starts the fan-out
    assert Execution.objects.get(id=parent_id).wake_at is not None
    run(parent_id)
    children = Execution.objects.filter(parent_id=parent_id, parent_step="many")
    assert sorted(children.values_list("parent_index", flat=True)) == [0, 1, 2]
    for each in children.order_by("-parent_index"):  # finishing in reverse order
        assert Execution.objects.get(id=parent_id).wake_at is None  # woken once, by the last
        run(each.id)
    execution = run(parent_id)
    assert execution.status == "completed"
    assert execution.output == {"one": 2, "many": [4, 6, 8]}
    assert calls(parent_id) == ["after"]


def test_a_failed_child_fails_the_invoke_step_with_its_error():
    parent_id = start("PARENT", {"value": -1, "values": []})
    run(parent_id)
    [child] = Execution.objects.filter(parent_id=parent_id)
    assert run(child.id).status == "failed"
    execution = run(parent_id)
    assert execution.status == "failed"
    assert "negative value -1" in execution.error["message"]
    assert step(parent_id, "one").error["childId"] == str(child.id)


def test_cancelling_a_parent_cancels_its_children_recursively():
    top = start("PARENT_OF_PARENTS", {"value": 1, "values": []})
    run(top)
    [middle] = Execution.objects.filter(parent_id=top)
    run(middle.id)
    [leaf] = Execution.objects.filter(parent_id=middle.id)
    runtime.cancel_execution(top)
    statuses = Execution.objects.filter(id__in=[top, middle.id, leaf.id]).values_list(
        "status", flat=True
    )
    assert set(statuses) == {"cancelled"}
    assert step(top, "inner").status == "cancelled"


def test_a_cancelled_child_fails_its_parents_step():
    parent_id = start("PARENT", {"value": 1, "values": []})
    run(parent_id)
    [child] = Execution.objects.filter(parent_id=parent_id)
    runtime.cancel_execution(child.id)
    execution = run(parent_id)
    assert execution.status == "failed" and "was cancelled" in execution.error["message"]


def test_invoke_of_an_unknown_binding_fails_before_anything_is_written():
    execution_id = start("INVOKE_GHOST")
    execution = run(execution_id)
    assert execution.status == "failed" and execution.error["type"] == "UnknownWorkflow"
    assert not Execution.objects.filter(parent_id=execution_id).exists()


def test_the_api_sends_events_and_lists_children(client):
    execution_id = start("APPROVAL", {})
    run(execution_id)
    url = f"/api/executions/{execution_id}/events"
    answer = client.post(url, {"type": "approval", "payload": {"ok": 1}}, "application/json")
    assert answer.status_code == 202
    assert Event.objects.get(id=answer.json()["eventId"]).payload == {"ok": 1}
    for body, status in [
        ({"payload": 1}, 422),
        ({"type": ""}, 422),
        ({"type": "   "}, 422),
        ({"type": "a\u0000b"}, 422),
        ({"type": "x", "payload": "\u0000"}, 400),
    ]:
        answer = client.post(url, body, "application/json")
        assert answer.status_code == status, (body, answer.content)
        assert "detail" in answer.json()
    missing = client.post("/api/executions/nope/events", {"type": "x"}, "application/json")
    assert missing.status_code == 404
    assert run(execution_id).status == "completed"
    ended = client.post(url, {"type": "approval"}, "application/json")
    assert ended.status_code == 409

    parent_id = start("PARENT", {"value": 1, "values": []})
    run(parent_id)
    [child] = Execution.objects.filter(parent_id=parent_id)
    listed = client.get(f"/api/executions?parentId={parent_id}").json()["items"]
    assert [item["id"] for item in listed] == [str(child.id)]
    assert listed[0]["parentId"] == parent_id
    body = client.get(f"/api/executions/{parent_id}").json()
    assert body["parentId"] is None and body["steps"][0]["childId"] == str(child.id)
    assert client.get("/api/executions?parentId=zzz").json() == {"items": [], "nextCursor": None}


def test_parallel_branches_run_at_once_each_a_step_of_its_own():
    execution_id = start("FAN_OUT", {"barrier": True})
    execution = run(execution_id)  # a barrier of three: run one by one, they would time out
    assert execution.status == "completed"
    assert execution.output == {"a": "A", "b": "B", "c": "C"}
    branches = Step.objects.filter(execution_id=execution_id, branch_of="fan")
    assert sorted(branches.values_list("name", flat=True)) == ["fan[a]", "fan[b]", "fan[c]"]
    assert {b.attempts.count() for b in branches} == {1}
    assert step(execution_id, "fan").status == "completed"


def test_a_replay_of_a_parallel_step_runs_only_the_unfinished_branches():
    execution_id = start("FAN_OUT", {"b_failures": 1})
    assert run(execution_id).status == "running"  # b waits for its retry
    assert step(execution_id, "fan[b]").wake_at is not None
    assert sorted(calls(execution_id)) == ["a", "b", "c"]
    execution = run(execution_id, after=3)
    assert execution.status == "completed" and execution.output["b"] == "B"
    assert sorted(calls(execution_id)) == ["a", "b", "b", "c"]  # a and c did not run again


def test_a_branch_failing_for_good_fails_the_step_after_the_others_finish():
    execution_id = start("FAN_OUT", {"b_failures": 5})
    run(execution_id)
    execution = run(execution_id, after=3)  # b's one retry fails too
    assert execution.status == "failed" and "fan[b]" in execution.error["message"]
    assert step(execution_id, "fan[a]").status == "completed"
    assert step(execution_id, "fan[c]").status == "completed"
    assert step(execution_id, "fan").status == "failed"
