"""Changing a workflow under running executions: `step.patched` takes the new path only where
the old code has not run that point yet, and each execution keeps a fingerprint of its code."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from engine import fingerprints, registry, runtime
from engine.models import Execution, Step
from engine.registry import WorkflowDefinition
from tests.conftest import wait_for
from tests.workflows.app import calls, counted

pytestmark = pytest.mark.django_db(transaction=True)

WORKFLOW = "code_change"  # the workflow of the CODE_CHANGE binding, its handler swapped here


def old_code(*, step, execution_id):
    step.run("charge", counted(execution_id, "charge"))
    step.sleep(1000)
    step.run("ship", counted(execution_id, "ship"))
    return "old"


def new_code(*, step, execution_id):
    if step.patched("charge-v2"):
        step.run("charge-v2", counted(execution_id, "charge-v2"))
    else:
        step.run("charge", counted(execution_id, "charge"))
    step.sleep(1000)
    step.run("ship", counted(execution_id, "ship"))
    return "new"


@pytest.fixture
def deploy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[..., object]], None]]:
    """Make `handler` the code of WORKFLOW in this process, as a deploy would."""
    workflows = registry.current().workflows

    def swap(handler: Callable[..., object]) -> None:
        definition = WorkflowDefinition(
            name=WORKFLOW,
            handler=handler,
            on_error=None,
            arguments=frozenset({"step", "execution_id"}),
        )
        monkeypatch.setitem(workflows, WORKFLOW, definition)

    yield swap


def start_binding(binding: str, input: object = None) -> str:
    return runtime.trigger(binding, input).execution_id


def start() -> str:
    return start_binding("CODE_CHANGE")


def run(execution_id: str, after: float = 0) -> Execution:
    runtime.run_execution(execution_id, now=timezone.now() + timedelta(seconds=after))
    return Execution.objects.get(id=execution_id)


def stored(execution_id: str) -> list[tuple[str, int, object]]:
    rows = Step.objects.filter(execution_id=execution_id).order_by("position")
    return [(step.name, step.position, step.output) for step in rows]


def test_a_new_execution_takes_the_new_path_and_stores_the_marker(deploy):
    deploy(new_code)
    execution_id = start()
    assert run(execution_id).status == "running"  # asleep
    assert stored(execution_id)[:2] == [("patched:charge-v2", 0, True), ("charge-v2", 1, None)]
    execution = run(execution_id, after=2)  # the replay finds the marker: True again
    assert (execution.status, execution.output) == ("completed", "new")
    assert calls(execution_id) == ["charge-v2", "ship"]
    assert [name for name, _, _ in stored(execution_id)] == [
        "patched:charge-v2",
        "charge-v2",
        "sleep:1",
        "ship",
    ]


def test_an_execution_past_that_point_under_the_old_code_stays_on_the_old_path(deploy):
    deploy(old_code)
    execution_id = start()
    assert run(execution_id).status == "running"  # charge ran, then asleep
    deploy(new_code)
    execution = run(execution_id, after=2)
    assert execution.error is None
    assert (execution.status, execution.output) == ("completed", "new")
    assert calls(execution_id) == ["charge", "ship"]  # charge ran once, charge-v2 never
    assert [(name, position) for name, position, _ in stored(execution_id)] == [
        ("charge", 0),
        ("sleep:1", 1),
        ("ship", 2),
    ]  # no marker, and it took no position


def test_an_execution_reaching_the_change_for_the_first_time_takes_the_new_path(deploy):
    def late_change(*, step, execution_id):
        step.run("charge", counted(execution_id, "charge"))
        step.sleep(1000)
        if step.patched("ship-v2"):
            step.run("ship-v2", counted(execution_id, "ship-v2"))
        else:
            step.run("ship", counted(execution_id, "ship"))

    deploy(old_code)
    execution_id = start()
    run(execution_id)
    deploy(late_change)
    assert run(execution_id, after=2).status == "completed"
    assert calls(execution_id) == ["charge", "ship-v2"]
    assert [name for name, _, _ in stored(execution_id)][-2:] == ["patched:ship-v2", "ship-v2"]


@pytest.mark.parametrize(
    ("change_id", "message"),
    [
        ("", "needs a non-empty string, got ''"),
        (42, "needs a non-empty string, got 42"),
        ("x" * 101, "is 101 characters, over 100"),
    ],
)
def test_a_bad_change_id_fails_the_execution_with_a_one_line_reason(deploy, change_id, message):
    def bad(*, step, execution_id):
        step.patched(change_id)

    deploy(bad)
    execution = run(start())
    assert execution.status == "failed" and execution.error["type"] == "StepMisuse"
    assert message in execution.error["message"]
    assert not Step.objects.filter(execution_id=execution.id).exists()


def test_a_change_id_used_twice_or_inside_a_step_is_refused(deploy):
    def twice(*, step, execution_id):
        step.patched("v2")
        step.patched("v2")

    deploy(twice)
    execution = run(start())
    assert execution.status == "failed"
    assert "step.patched('v2') is called twice in this execution" in execution.error["message"]

    def nested(*, step, execution_id):
        step.run("outer", lambda: step.patched("v2"))

    deploy(nested)
    execution = run(start())
    assert execution.status == "failed"
    assert "step.patched('v2') was called inside step 'outer'" in execution.error["message"]
    assert [name for name, _, _ in stored(execution.id)] == ["outer"]


def test_a_step_name_cannot_take_the_markers_prefix(deploy):
    def clash(*, step, execution_id):
        step.run("patched:mine", lambda: 1)

    deploy(clash)
    execution = run(start())
    assert execution.status == "failed"
    assert "reserved for step.patched()" in execution.error["message"]


def test_the_fingerprint_is_stored_and_the_page_and_api_tell_a_code_change(deploy, client):
    deploy(old_code)
    execution_id = start()
    old = Execution.objects.get(id=execution_id).code_fingerprint
    assert old == fingerprints.of_handler(old_code) and len(old) == fingerprints.LENGTH
    page = reverse("dashboard:execution_detail", args=[execution_id])
    assert client.get(f"/api/executions/{execution_id}").json()["codeFingerprint"] == old
    response = client.get(page)
    assert response.status_code == 200 and "code-changed" not in response.content.decode()
    deploy(new_code)
    new = fingerprints.of_handler(new_code)
    assert new != old
    body = client.get(page).content.decode()
    assert "The workflow's code has changed since this execution started" in body
    assert f"<code>{old}</code> then, <code>{new}</code> now" in body
    assert runtime.trigger("CODE_CHANGE").execution.code_fingerprint == new  # type: ignore[union-attr]


def test_children_started_by_invoke_store_their_own_workflows_fingerprint():
    parent_id = start_binding("PARENT", {"value": 1, "values": [2]})
    run(parent_id)
    [child] = Execution.objects.filter(parent_id=parent_id)
    parent = Execution.objects.get(id=parent_id)
    assert child.code_fingerprint == registry.current().fingerprint(child.workflow)
    assert parent.code_fingerprint == registry.current().fingerprint(parent.workflow)
    assert child.code_fingerprint != parent.code_fingerprint


def test_a_fingerprint_changes_with_the_module_file(tmp_path: Path):
    module = tmp_path / "flow_fingerprint.py"
    config = tmp_path / "ploy.yaml"
    config.write_text("main: flow_fingerprint.py\nworkflow:\n  F:\n    name: handler\n")
    module.write_text("def handler(*, step):\n    return 1\n\n\nworkflows = {'handler': handler}\n")
    first = registry.read(config)
    module.write_text(module.read_text() + "\nHELPER = 2\n")  # after the import: not its code
    assert first.fingerprint("handler") == first.fingerprint("handler")
    second = registry.read(config)
    assert first.fingerprint("handler") != second.fingerprint("handler")
    assert first.fingerprint("elsewhere") is None


FLOW = """
from tests.workflows.app import counted


def handler(*, step, execution_id):
    {charge}
    step.sleep(1500)
    step.run("ship", counted(execution_id, "ship"))
    return "done"


workflows = {{"flow": handler}}
"""
OLD_CHARGE = 'step.run("charge", counted(execution_id, "charge"))'
NEW_CHARGE = """if step.patched("charge-v2"):
        step.run("charge-v2", counted(execution_id, "charge-v2"))
    else:
        step.run("charge", counted(execution_id, "charge"))"""


def write_flow(directory: Path, charge: str) -> None:
    (directory / "flow.py").write_text(textwrap.dedent(FLOW).format(charge=charge))


def test_a_worker_with_the_rewritten_module_resumes_a_sleeping_execution_on_the_old_path(
    tmp_path, start_worker, monkeypatch
):
    config = tmp_path / "ploy.yaml"
    config.write_text("main: flow.py\nworkflow:\n  FLOW:\n    name: flow\n")
    write_flow(tmp_path, OLD_CHARGE)
    monkeypatch.setattr(registry, "_current", registry.read(config))
    worker = start_worker(threads=2, PLOY_CONFIG=str(config))
    old_id = runtime.trigger("FLOW").execution_id
    wait_for(lambda: Step.objects.filter(execution_id=old_id, name="sleep:1").exists())
    worker.stop()
    old_fingerprint = Execution.objects.get(id=old_id).code_fingerprint

    write_flow(tmp_path, NEW_CHARGE)  # the deploy, while it sleeps
    monkeypatch.setattr(registry, "_current", registry.read(config))
    start_worker(threads=2, PLOY_CONFIG=str(config))
    new_id = runtime.trigger("FLOW").execution_id
    ended = Execution.objects.filter(id__in=[old_id, new_id]).exclude(status="running")
    wait_for(lambda: ended.count() == 2, timeout=60)
    old, new = Execution.objects.get(id=old_id), Execution.objects.get(id=new_id)
    assert (old.status, old.error) == ("completed", None)
    assert calls(old_id) == ["charge", "ship"]
    assert calls(new_id) == ["charge-v2", "ship"]
    assert [name for name, _, _ in stored(new_id)][0] == "patched:charge-v2"
    assert old.code_fingerprint == old_fingerprint != new.code_fingerprint


def test_once_the_old_branch_is_gone_the_call_may_go_too(deploy):
    def cleaned_up(*, step, execution_id):
        step.run("charge-v2", counted(execution_id, "charge-v2"))
        step.sleep(1000)
        step.run("ship", counted(execution_id, "ship"))
        return "clean"

    deploy(new_code)
    execution_id = start()
    run(execution_id)  # marker, charge-v2, asleep
    deploy(cleaned_up)  # step.patched and its old branch removed
    execution = run(execution_id, after=2)
    assert (execution.status, execution.output, execution.error) == ("completed", "clean", None)
    assert calls(execution_id) == ["charge-v2", "ship"]


def test_a_removed_call_whose_old_branch_came_back_still_fails_with_code_changed(deploy):
    deploy(new_code)
    execution_id = start()
    run(execution_id)
    deploy(old_code)  # reverted: the stored new path does not match
    execution = run(execution_id, after=2)
    assert execution.status == "failed" and execution.error["type"] == "CodeChanged"
    assert "was 'charge-v2' and is now 'charge'" in execution.error["message"]
    assert calls(execution_id) == ["charge-v2"]


class SlottedHandler:
    """A callable object that cannot be a weak reference's target."""

    __slots__ = ()

    def __call__(self, *, step: object) -> int:
        return 1


def test_a_callable_object_handler_gets_a_fingerprint_too():
    first, second = fingerprints.of_handler(SlottedHandler()), fingerprints.of_handler(old_code)
    assert len(first) == fingerprints.LENGTH and first == fingerprints.of_handler(SlottedHandler())
    assert first != second
