"""Workflows for the real-worker tests of waiting and composition (tests/test_waits_workers.py
and tests/test_waits_scaleout.py). Step bodies count their calls in the same files as app.py's
`record`, one line per call, so a test can read them with `tests.workflows.app.calls`.

A body that pauses does so on its first call only (counted across processes): the test kills
its worker during that pause, and the call after the restart runs straight through."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def _counts(execution_id: str) -> Path:
    path = Path(os.environ["PLOY_DATA_DIR"]) / "counts"
    path.mkdir(parents=True, exist_ok=True)
    return path / f"{execution_id}.log"


def record(execution_id: str, what: str) -> None:
    with open(_counts(execution_id), "a") as handle:
        handle.write(what + "\n")


def calls(execution_id: str) -> list[str]:
    path = _counts(execution_id)
    return path.read_text().splitlines() if path.exists() else []


def pause_first_call(execution_id: str, what: str, seconds: float) -> None:
    """Record the call; the first one of `what` then waits `seconds` (Event.wait, as app.py)."""
    record(execution_id, what)
    if seconds and calls(execution_id).count(what) == 1:
        threading.Event().wait(seconds)


def gate(*, input, step, execution_id):
    """Two waits for events of type `go`, a step between them that may pause (`pause`)."""
    step.run("request", lambda: record(execution_id, "request"))
    first = step.wait_for_event("first", "go", timeout_ms=input.get("timeout_ms"))

    def act():
        pause_first_call(execution_id, f"act:{first}", input.get("pause", 0))
        return first

    step.run("act", act)
    second = step.wait_for_event("second", "go")
    step.run("done", lambda: record(execution_id, f"done:{second}"))
    return [first, second]


def dated_sleep(*, input, step, execution_id):
    step.run("before", lambda: record(execution_id, "before"))
    step.sleep_until(input["until"])
    step.run("after", lambda: record(execution_id, "after"))
    return "woke"


def slow_child(*, input, step, execution_id):
    """A child: `work` (its first call pauses `pause` s) returns ten times the value."""

    def work():
        pause_first_call(execution_id, "work", input.get("pause", 0))
        return input["value"] * 10

    return step.run("work", work)


def invoke_one(*, input, step, execution_id):
    """One child of `binding`, then `after`, whose first call pauses `pause_after` s."""
    output = step.invoke("child", input["binding"], input["input"])
    step.run("after", lambda: pause_first_call(execution_id, "after", input.get("pause_after", 0)))
    return output


def leaf(*, input, step, execution_id):
    """`slow` records its start and its end: a test can tell when its late write is done."""

    def slow():
        record(execution_id, "slow")
        threading.Event().wait(input["seconds"])
        record(execution_id, "slow-done")

    step.run("first", lambda: record(execution_id, "first"))
    step.run("slow", slow)
    step.run("last", lambda: record(execution_id, "last"))
    return "leaf"


def nested_invoke(*, input, step, execution_id):
    """`depth` levels of parents above a LEAF child; `after` must never run once cancelled."""
    if input["depth"]:
        output = step.invoke("inner", "NESTED_INVOKE", {**input, "depth": input["depth"] - 1})
    else:
        output = step.invoke("leaf", "LEAF", {"seconds": input["seconds"]})
    step.run("after", lambda: record(execution_id, "after"))
    return output


def many_items(*, input, step, execution_id):
    """One ITEM child per value; each records `item:<index>` in this parent's file."""
    items = [
        {"parent": execution_id, "index": index, "value": value, "ms": input.get("ms", 0)}
        for index, value in enumerate(input["values"])
    ]
    outputs = step.invoke_many("items", "ITEM", items)
    step.run("total", lambda: record(execution_id, "total") or sum(outputs))
    return outputs


def item(*, input, step):
    def double():
        record(input["parent"], f"item:{input['index']}")
        if input["value"] < 0:
            raise ValueError(f"negative value {input['value']}")
        if input["ms"]:
            threading.Event().wait(input["ms"] / 1000)
        return input["value"] * 2

    # a negative value fails at once, without retries
    return step.run("double", double, retries=0 if input["value"] < 0 else None)


def sad_parent(*, step, execution_id):
    step.run("before", lambda: record(execution_id, "before"))
    return step.invoke("child", "DOUBLE", {"value": -1})


def on_sad_parent_error(error, *, execution_id):
    record(execution_id, f"on_error:{type(error).__name__}")


def split(*, input, step, execution_id):
    """Four branches; those named in `slow` pause on their first call, for a kill mid-step."""

    def branch(key):
        def body():
            seconds = input.get("seconds", 60) if key in input.get("slow", []) else 0
            pause_first_call(execution_id, key, seconds)
            return key.upper()

        return body

    results = step.parallel("fan", {key: branch(key) for key in "abcd"})
    step.run("after", lambda: record(execution_id, "after"))
    return results


workflows = {
    "gate": {"handler": gate},
    "dated_sleep": {"handler": dated_sleep},
    "slow_child": {"handler": slow_child},
    "invoke_one": {"handler": invoke_one},
    "leaf": {"handler": leaf},
    "nested_invoke": {"handler": nested_invoke},
    "many_items": {"handler": many_items},
    "item": {"handler": item},
    "sad_parent": {"handler": sad_parent, "on_error": on_sad_parent_error},
    "split": {"handler": split},
}
