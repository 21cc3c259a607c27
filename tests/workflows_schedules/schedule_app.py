"""Workflows of the schedule tests: each run is counted in a file, so a test can prove that
every tick ran once across worker processes."""

import json
import os
from pathlib import Path


def ticks_file() -> Path:
    path = Path(os.environ["PLOY_DATA_DIR"]) / "schedule-ticks.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def record(line: dict) -> None:
    """One short line per call: appends are atomic across processes."""
    with open(ticks_file(), "a") as handle:
        handle.write(json.dumps(line) + "\n")


def recorded() -> list[dict]:
    path = ticks_file()
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def report(*, input, step, execution_id):
    step.run("report", lambda: record({"execution": execution_id, "input": input}))
    return {"reported": input}


def scheduled(event, *, env):
    """Ploy's form: called with the tick's event."""
    record({"name": event.name, "cron": event.cron, "scheduledTime": event.scheduled_time})
    if os.environ.get("PLOY_TEST_SCHEDULED_FAILS"):
        if os.environ["PLOY_TEST_SCHEDULED_FAILS"] == "no-retry":
            event.no_retry()
        raise RuntimeError("scheduled failed")


workflows = {"report": report}
