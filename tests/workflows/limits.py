"""Fixtures of concurrency limits. Each execution notes when it took its slot and when it let
it go in one shared file (`slots.log`), so a test can prove how many ran at once per key."""

import os
import threading
import time
from pathlib import Path


def _folder() -> Path:
    path = Path(os.environ["PLOY_DATA_DIR"]) / "counts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def note(execution_id: str, what: str) -> None:
    """One short line per call: appends are atomic across processes."""
    with open(_folder() / "slots.log", "a") as handle:
        handle.write(f"{what} {execution_id} {time.time():.6f}\n")


def slot_notes() -> list[tuple[str, str, float]]:
    """(what, execution id, time) of every note, in the order written."""
    path = _folder() / "slots.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(what, execution_id, float(at)) for what, execution_id, at in map(str.split, lines)]


def work_calls(execution_id: str) -> int:
    path = _folder() / f"{execution_id}.work"
    return len(path.read_text()) if path.exists() else 0


def limited(*, input, step, execution_id):
    """Notes its start, works `seconds` (after an optional durable sleep), notes its end. With
    `pause`, the first call of `work` waits that long first (a kill test stops it there)."""
    input = input or {}
    step.run("begin", lambda: note(execution_id, "start"))
    if input.get("sleep_ms"):
        step.sleep(input["sleep_ms"])

    def work():
        with open(_folder() / f"{execution_id}.work", "a") as handle:
            handle.write("x")
        if input.get("pause") and work_calls(execution_id) == 1:
            threading.Event().wait(input["pause"])
        threading.Event().wait(input.get("seconds", 0))
        if input.get("fail"):
            raise RuntimeError("this one fails")
        return input.get("customer")

    result = step.run("work", work)
    step.run("end", lambda: note(execution_id, "end"))
    return result


def limited_parent(*, input, step):
    """Children of a limited binding: they queue for its slots like any execution."""
    return step.invoke_many("children", "LIMITED_ONE", [{"seconds": 0}] * input["children"])


workflows = {"limited": limited, "limited_parent": limited_parent}
