"""Rerun from a step: the steps before it are copied (their functions never run again), the
step and what follows run, `input` replaces the input, and the code-change guard still holds.
Through engine.runtime, the HTTP API, and a real worker process."""

from __future__ import annotations

import json
import uuid

import pytest
from django.test import Client

from engine import events, runtime
from engine.models import Execution, Step
from engine.reruns import InvalidRerun
from tests.conftest import wait_for
from tests.workflows.reruns import calls

pytestmark = pytest.mark.django_db(transaction=True)

ALL_STEPS = ["fetch", "double", "check", "fan", "fan[x]", "fan[y]", "publish"]


@pytest.fixture(autouse=True)
def _no_token(settings) -> None:
    settings.PLOY_API_TOKEN = None


def tag() -> str:
    return uuid.uuid4().hex


def run(execution_id: object) -> Execution:
    runtime.run_execution(str(execution_id))
    return Execution.objects.get(id=execution_id)


def failed_forkable(label: str) -> Execution:
    """fetch and double complete (n=5 → 10), check fails: 10 is over the limit 3."""
    execution = run(runtime.trigger("FORKABLE", {"tag": label, "n": 5, "limit": 3}).execution_id)
    assert execution.status == "failed"
    assert calls(label) == ["fetch", "double", "check"]
    return execution


def step_rows(execution: Execution) -> list[Step]:
    return list(Step.objects.filter(execution=execution).order_by("position"))


# --- engine.runtime --------------------------------------------------------------------------


def test_a_rerun_from_a_failed_step_reuses_the_steps_before_it_with_a_new_input():
    label = tag()
    original = failed_forkable(label)
    new_input = {"tag": label, "n": 1000, "limit": 100}
    result = runtime.rerun_execution(original.id, from_step="check", input=new_input)
    rerun = run(result.execution_id)
    assert rerun.status == "completed", rerun.error
    # fetch and double were not called again: their stored outputs (from n=5) were reused.
    assert calls(label)[:4] == ["fetch", "double", "check", "check"]
    assert sorted(calls(label)[4:6]) == ["fan[x]", "fan[y]"] and calls(label)[6:] == ["publish"]
    assert rerun.output == {
        "checked": {"ok": 10},
        "fan": {"x": "x", "y": "y"},
        "published": {"doubled": 10},
        "n": 1000,
    }
    assert (rerun.input, rerun.rerun_of_id, rerun.from_step) == (new_input, original.id, "check")
    rows = step_rows(rerun)
    assert [row.name for row in rows[:2]] == ["fetch", "double"]
    assert [row.position for row in rows] == list(range(len(rows)))
    assert [row.reused_from for row in rows] == [original.id, original.id] + [None] * 5
    assert not rows[0].attempts.exists()  # its attempts stay with the execution that ran them


def test_a_rerun_keeps_the_input_unless_one_is_given_and_none_is_an_input():
    label = tag()
    original = failed_forkable(label)
    kept = runtime.rerun_execution(original.id, from_step="check")
    assert Execution.objects.get(id=kept.execution_id).input == original.input
    replaced = runtime.rerun_execution(original.id, from_step="check", input=None)
    assert Execution.objects.get(id=replaced.execution_id).input is None
    plain = Execution.objects.get(id=runtime.rerun_execution(original.id).execution_id)
    assert (plain.input, plain.from_step, plain.steps.count()) == (original.input, "", 0)


def test_a_rerun_from_the_first_step_runs_everything_again():
    label = tag()
    original = failed_forkable(label)
    rerun = runtime.rerun_execution(
        original.id, from_step="fetch", input={"tag": label, "n": 1, "limit": 10}
    )
    assert Step.objects.filter(execution_id=rerun.execution_id).count() == 0
    assert run(rerun.execution_id).output["published"] == {"doubled": 2}
    assert calls(label).count("fetch") == 2


def test_a_rerun_from_a_parallel_step_runs_all_its_branches_and_a_branch_is_refused():
    label = tag()
    original = run(runtime.trigger("FORKABLE", {"tag": label, "n": 2}).execution_id)
    assert original.status == "completed"
    with pytest.raises(InvalidRerun, match="branch of the parallel step 'fan'.*rerun from 'fan'"):
        runtime.rerun_execution(original.id, from_step="fan[x]")
    rerun = run(runtime.rerun_execution(original.id, from_step="fan").execution_id)
    assert rerun.status == "completed"
    assert sorted(calls(label)) == sorted(ALL_STEPS[:3] + ["fan[x]", "fan[y]", "publish"] * 2)
    assert [row.name for row in step_rows(rerun) if row.reused_from] == ["fetch", "double", "check"]


def test_a_rerun_after_a_parallel_step_reuses_the_group_and_its_branches():
    label = tag()
    original = run(runtime.trigger("FORKABLE", {"tag": label, "n": 2}).execution_id)
    rerun = run(runtime.rerun_execution(original.id, from_step="publish").execution_id)
    assert rerun.status == "completed" and rerun.output == original.output
    assert calls(label).count("fan[x]") == 1 and calls(label).count("publish") == 2
    reused = {row.name: row.branch_of for row in step_rows(rerun) if row.reused_from}
    assert reused == {
        "fetch": "",
        "double": "",
        "check": "",
        "fan": "",
        "fan[x]": "fan",
        "fan[y]": "fan",
    }


def test_a_rerun_of_a_rerun_names_where_the_reused_step_first_ran():
    label = tag()
    original = failed_forkable(label)
    fixed = {"tag": label, "n": 5, "limit": 100}
    first = run(runtime.rerun_execution(original.id, from_step="check", input=fixed).execution_id)
    second = run(runtime.rerun_execution(first.id, from_step="publish").execution_id)
    assert second.status == "completed"
    reused = {row.name: row.reused_from for row in step_rows(second) if row.reused_from}
    assert reused["fetch"] == original.id and reused["check"] == first.id
    assert calls(label).count("double") == 1 and calls(label).count("publish") == 2


def test_the_code_change_guard_checks_a_rerun_against_its_copied_steps():
    label = tag()
    original = failed_forkable(label)
    changed = {"tag": label, "n": 5, "limit": 100, "rename": True}
    rerun = run(runtime.rerun_execution(original.id, from_step="check", input=changed).execution_id)
    assert rerun.status == "failed"
    assert rerun.error["type"] == "CodeChanged"
    assert "'double'" in rerun.error["message"] and "'double-v2'" in rerun.error["message"]
    assert calls(label) == ["fetch", "double", "check"]  # nothing of the new path ran


@pytest.mark.parametrize(
    ("from_step", "message"),
    [
        ("nope", "has no step 'nope': fromStep must be one of 'fetch', 'double', 'check'"),
        ("", "has no step '': fromStep must be one of"),
        ("publish", "has no step 'publish'"),
    ],
)
def test_a_from_step_that_cannot_start_a_rerun_is_refused_and_starts_nothing(from_step, message):
    original = failed_forkable(tag())
    with pytest.raises(InvalidRerun, match=message):
        runtime.rerun_execution(original.id, from_step=from_step)
    assert Execution.objects.count() == 1


def test_a_running_execution_can_be_rerun_from_a_step_that_has_ended_only():
    label = tag()
    execution_id = runtime.trigger("WAITS_THEN_ACTS", {"tag": label}).execution_id
    waiting = run(execution_id)
    assert waiting.status == "running"
    with pytest.raises(InvalidRerun, match=r"step 'approval' has not ended \(waiting\)"):
        runtime.rerun_execution(execution_id, from_step="approval")
    rerun = runtime.rerun_execution(execution_id, from_step="before")
    assert Execution.objects.get(id=rerun.execution_id).status == "running"


def test_a_rerun_after_a_wait_and_a_child_reuses_them_and_from_the_child_starts_a_new_one():
    label = tag()
    execution_id = runtime.trigger("WAITS_THEN_ACTS", {"tag": label}).execution_id
    run(execution_id)
    events.send_event(execution_id, "approval", {"ok": True})
    run(execution_id)  # the event received; the child started
    [child] = Execution.objects.filter(parent_id=execution_id)
    run(child.id)
    original = run(execution_id)
    assert original.status == "completed", original.error
    after = run(runtime.rerun_execution(execution_id, from_step="after").execution_id)
    assert after.status == "completed" and after.output == original.output
    assert not Execution.objects.filter(parent_id=after.id).exists()  # the child was reused
    from_child = run(runtime.rerun_execution(execution_id, from_step="child").execution_id)
    assert from_child.status == "running"  # it waits for a child of its own, holding nothing
    [new_child] = Execution.objects.filter(parent_id=from_child.id)
    assert new_child.id != child.id
    assert calls(label) == ["before", "after", "after"]


# --- the HTTP API ----------------------------------------------------------------------------


def post(client: Client, path: str, body: object = b"") -> object:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(path, data, content_type="application/json")


def test_the_api_reruns_from_a_step_with_a_new_input(client: Client):
    label = tag()
    original = failed_forkable(label)
    new_input = {"tag": label, "n": 7, "limit": 50}
    response = post(
        client,
        f"/api/executions/{original.id}/rerun",
        {"fromStep": "check", "input": new_input},
    )
    assert response.status_code == 202
    rerun_id = response.json()["executionId"]
    run(rerun_id)
    body = client.get(f"/api/executions/{rerun_id}").json()
    assert (body["status"], body["rerunOf"], body["fromStep"]) == (
        "completed",
        str(original.id),
        "check",
    )
    assert body["input"] == new_input and body["output"]["n"] == 7
    reused = [(step["name"], step["reusedFrom"]) for step in body["steps"] if step["reusedFrom"]]
    assert reused == [("fetch", str(original.id)), ("double", str(original.id))]
    listed = client.get("/api/executions?workflow=forkable").json()["items"]
    assert {item["id"]: item["fromStep"] for item in listed} == {
        rerun_id: "check",
        str(original.id): None,
    }


@pytest.mark.parametrize(
    ("body", "expected_input"),
    [
        (b"", "same"),
        (b"null", "same"),
        ({}, "same"),
        ({"fromStep": None}, "same"),
        ({"input": None}, None),
        ({"input": {"other": 1}}, {"other": 1}),
        ({"fromStep": "check", "input": [1, 2]}, [1, 2]),
    ],
)
def test_the_rerun_body_is_optional_and_input_null_means_null(client: Client, body, expected_input):
    original = failed_forkable(tag())
    response = post(client, f"/api/executions/{original.id}/rerun", body)
    assert response.status_code == 202, response.json()
    rerun = Execution.objects.get(id=response.json()["executionId"])
    assert rerun.input == (original.input if expected_input == "same" else expected_input)
    assert rerun.rerun_of_id == original.id


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"{", 400, "the request body is not valid JSON"),
        (b"[1]", 422, "the rerun body must be a JSON object with fromStep and/or input, got list"),
        (b'"check"', 422, "the rerun body must be a JSON object"),
        ({"from_step": "x"}, 422, "the rerun body has an unknown key 'from_step': use fromStep"),
        ({"fromStep": 3}, 422, "fromStep must be a step name (a string), got 3"),
        ({"fromStep": "a\x00b"}, 422, "fromStep must be a step name"),
        ({"fromStep": "ghost"}, 422, "has no step 'ghost': fromStep must be one of 'fetch',"),
        ({"fromStep": "fan[x]"}, 422, "has no step 'fan[x]'"),
        ({"fromStep": "publish"}, 422, "has no step 'publish'"),
    ],
)
def test_a_bad_rerun_body_is_refused_in_one_line_and_starts_nothing(
    client: Client, body, status, detail
):
    original = failed_forkable(tag())
    response = post(client, f"/api/executions/{original.id}/rerun", body)
    assert response.status_code == status
    assert detail in response.json()["detail"] and "\n" not in response.json()["detail"]
    assert Execution.objects.count() == 1


def test_rerunning_an_unknown_execution_with_a_body_is_404(client: Client):
    response = post(client, f"/api/executions/{uuid.uuid4()}/rerun", {"fromStep": "check"})
    assert response.status_code == 404
    assert response.json()["detail"].startswith("no execution with id")


# --- a real worker ---------------------------------------------------------------------------


def test_a_worker_runs_a_fork_that_reuses_outputs_to_completion(start_worker, client: Client):
    start_worker()
    label = tag()
    first = client.post(
        "/api/workflows/FORKABLE/trigger",
        json.dumps({"tag": label, "n": 21, "limit": 5, "sleep_ms": 200}),
        content_type="application/json",
    ).json()["executionId"]
    failed = wait_for(lambda: Execution.objects.filter(id=first, status="failed").first())
    assert failed.error["type"] == "StepFailed"
    fixed = {"tag": label, "n": 21, "limit": 100, "sleep_ms": 200}
    response = post(client, f"/api/executions/{first}/rerun", {"fromStep": "check", "input": fixed})
    fork = response.json()["executionId"]
    done = wait_for(lambda: Execution.objects.filter(id=fork).exclude(status="running").first())
    assert done.status == "completed", done.error
    assert done.output["published"] == {"doubled": 42} and done.output["n"] == 21
    assert calls(label).count("fetch") == 1 and calls(label).count("double") == 1
    assert calls(label).count("check") == 2 and calls(label).count("publish") == 1
    names = [row.name for row in step_rows(done)]
    assert names == ["fetch", "double", "check", "fan", "fan[x]", "fan[y]", "sleep:1", "publish"]


def test_an_empty_form_is_no_body_and_a_form_content_type_is_not_parsed(client: Client):
    original = failed_forkable(tag())
    empty = client.post(f"/api/executions/{original.id}/rerun")  # the test client's empty form
    assert empty.status_code == 202
    assert Execution.objects.get(id=empty.json()["executionId"]).from_step == ""
    odd = client.post(
        f"/api/executions/{original.id}/rerun",
        json.dumps({"fromStep": "check"}),
        content_type="multipart/form-data",  # no boundary: the body is read as JSON, as always
    )
    assert odd.status_code == 202
    assert Execution.objects.get(id=odd.json()["executionId"]).from_step == "check"
