"""The benchmark's workflows, the same trivial work on every side."""

from __future__ import annotations

import time


def chain(*, input, step):
    """`input["steps"]` trivial durable steps."""
    total = 0
    for number in range(input["steps"]):
        total += step.run(f"step-{number}", lambda number=number: number)
    return {"total": total}


def validate(input: dict) -> dict:
    # The wall-clock start of the first step, for the trigger-to-first-step latency.
    return {"valid": bool(input.get("action")), "startedAt": time.time()}


def process(input: dict) -> dict:
    return {"processedValue": input["value"] * 2}


def store(processed: dict) -> dict:
    return {"stored": processed["processedValue"]}


def data_processing(*, input, step):
    """The guide's validate / process / store, with trivial step bodies."""
    validation = step.run("validate", lambda: validate(input))
    processed = step.run("process", lambda: process(input))
    step.run("store", lambda: store(processed))
    return {**processed, "startedAt": validation["startedAt"]}


workflows = {"chain": chain, "data_processing": data_processing}
