"""Workflows for the fault-injection tests. Each step body writes a `start` and an `end` mark
(step, pid, host time; `ticker` a `tick` every 20 ms as well) to a file per execution, so a test
can count body runs across killed, frozen and restarted processes, and check that no two runs
of one step overlapped."""

from __future__ import annotations

import atexit
import os
import time
from pathlib import Path
from typing import NamedTuple

CHAIN_BEFORE_SLEEP = ("one", "two", "three")
CHAIN_AFTER_SLEEP = ("flaky", "five", "six", "seven")
CHAIN_STEPS = (*CHAIN_BEFORE_SLEEP, "sleep:1", *CHAIN_AFTER_SLEEP)


class Mark(NamedTuple):
    """One line of an execution's marks file (a NamedTuple: this module is loaded by path)."""

    event: str  # "start" or "end"
    step: str
    pid: int
    at: float  # time.time() on this host


def marks_dir() -> Path:
    path = Path(os.environ["PLOY_DATA_DIR"]) / "faults"
    path.mkdir(parents=True, exist_ok=True)
    return path


def mark(execution_id: str, event: str, step: str) -> None:
    """One short line per event; O_APPEND keeps lines whole across processes."""
    with open(marks_dir() / f"{execution_id}.log", "a") as handle:
        handle.write(f"{event} {step} {os.getpid()} {time.time():.6f}\n")


def marks(execution_id: str) -> list[Mark]:
    path = marks_dir() / f"{execution_id}.log"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        event, step, pid, at = line.split(" ")
        found.append(Mark(event, step, int(pid), float(at)))
    return found


def starts(execution_id: str, step: str | None = None) -> list[Mark]:
    return [
        found
        for found in marks(execution_id)
        if found.event == "start" and (step is None or found.step == step)
    ]


def body(execution_id: str, step: str, seconds: float, *, fail_first: bool = False):
    """A step body that takes `seconds` and returns its step's name and its process id;
    with `fail_first`, its first call ever (across all processes) raises."""

    def run() -> dict:
        mark(execution_id, "start", step)
        first_call = len(starts(execution_id, step)) == 1
        time.sleep(seconds)
        mark(execution_id, "end", step)
        if fail_first and first_call:
            raise RuntimeError(f"{step}: the first attempt fails")
        return {"step": step, "pid": os.getpid()}

    return run


def chain(*, input, step, execution_id):
    """Seven steps, a sleep after the third and a retry (the fourth fails once)."""
    seconds = input.get("step_ms", 100) / 1000
    names = []
    for name in CHAIN_BEFORE_SLEEP:
        names.append(step.run(name, body(execution_id, name, seconds))["step"])
    step.sleep(input.get("sleep_ms", 300))
    for name in CHAIN_AFTER_SLEEP:
        run = body(execution_id, name, seconds, fail_first=name == "flaky")
        names.append(step.run(name, run)["step"])
    return {"steps": names, "n": input.get("n")}


def quick(*, input, step, execution_id):
    """Two short steps: the race over thousands of executions."""
    first = step.run("a", body(execution_id, "a", input.get("ms", 0) / 1000))
    second = step.run("b", body(execution_id, "b", 0))
    return {"n": input.get("n"), "pids": [first["pid"], second["pid"]]}


def hold(*, input, step, execution_id):
    """`first`, then `long`, whose n-th call lasts `seconds[n]` (the last value repeats), then
    `last`: each returns the pid that ran it, so the output names who ran what."""

    def long_body() -> dict:
        durations = input["seconds"]
        call = len(starts(execution_id, "long"))  # the calls before this one
        return body(execution_id, "long", durations[min(call, len(durations) - 1)])()

    first = step.run("first", body(execution_id, "first", 0))
    long = step.run("long", long_body)
    last = step.run("last", body(execution_id, "last", 0))
    return {"first": first["pid"], "long": long["pid"], "last": last["pid"]}


def nap(*, input, step, execution_id):
    """A step, a durable sleep of `ms`, a step."""
    step.run("before", body(execution_id, "before", 0))
    step.sleep(input["ms"])
    step.run("after", body(execution_id, "after", 0))
    return "rested"


def ticker(*, input, step, execution_id):
    """`ticking`, on its first call, marks a tick every 20 ms for `seconds` (a body with side
    effects all along) and makes its process's exit take `exit_seconds` longer (an atexit
    hook, as an error reporter that flushes its buffer has); later calls end at once."""

    def ticking() -> dict:
        mark(execution_id, "start", "ticking")
        if len(starts(execution_id, "ticking")) == 1:
            atexit.register(time.sleep, input["exit_seconds"])
            deadline = time.monotonic() + input["seconds"]
            while time.monotonic() < deadline:
                mark(execution_id, "tick", "ticking")
                time.sleep(0.02)
        mark(execution_id, "end", "ticking")
        return {"pid": os.getpid()}

    return step.run("ticking", ticking)["pid"]


workflows = {
    "fault_chain": {"handler": chain},
    "fault_quick": {"handler": quick},
    "fault_hold": {"handler": hold},
    "fault_nap": {"handler": nap},
    "fault_ticker": {"handler": ticker},
}
