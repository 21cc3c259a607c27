"""Workflows for the tests of reruns from a step (tests/test_rerun_from_step.py). Step bodies
count their calls by the input's `tag`, not by execution id, so that one count spans an
execution and its reruns: a reused step's body must not appear again."""

from __future__ import annotations

import os
from pathlib import Path

from engine import NonRetryableError


def _counts(tag: str) -> Path:
    path = Path(os.environ["PLOY_DATA_DIR"]) / "counts"
    path.mkdir(parents=True, exist_ok=True)
    return path / f"rerun-{tag}.log"


def record(tag: str, what: str) -> None:
    with open(_counts(tag), "a") as handle:
        handle.write(what + "\n")


def calls(tag: str) -> list[str]:
    path = _counts(tag)
    return path.read_text().splitlines() if path.exists() else []


def forkable(*, input, step):
    """fetch, double, check (fails when double is over the input's limit), a parallel fan, an
    optional sleep, then publish. `rename` takes another name at position 1, as a deploy
    that renamed a step would."""
    tag = input["tag"]

    def counted(name, value):
        def body():
            record(tag, name)
            return value()

        return body

    fetched = step.run("fetch", counted("fetch", lambda: {"n": input["n"]}))
    doubled = step.run(
        "double-v2" if input.get("rename") else "double",
        counted("double", lambda: fetched["n"] * 2),
    )

    def check():
        record(tag, "check")
        if doubled > input.get("limit", doubled):
            raise NonRetryableError(f"{doubled} is over the limit {input['limit']}")
        return {"ok": doubled}

    checked = step.run("check", check)
    fan = step.parallel(
        "fan", {"x": counted("fan[x]", lambda: "x"), "y": counted("fan[y]", lambda: "y")}
    )
    if input.get("sleep_ms"):
        step.sleep(input["sleep_ms"])
    published = step.run("publish", counted("publish", lambda: {"doubled": doubled}))
    return {"checked": checked, "fan": fan, "published": published, "n": input["n"]}


def waits_then_acts(*, input, step):
    """A wait for an event between two steps, then a child: reruns after each."""
    tag = input["tag"]
    step.run("before", lambda: record(tag, "before"))
    decision = step.wait_for_event("approval", "approval")
    child = step.invoke("child", "DOUBLE", {"value": 2})
    step.run("after", lambda: record(tag, "after"))
    return {"decision": decision, "child": child}


workflows = {"forkable": forkable, "waits_then_acts": waits_then_acts}
