"""An execution as its page shows it: values pretty-printed, steps numbered, timeline computed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from dashboard.timeline import Timeline, build_timeline
from dashboard.values import JsonValue, pretty
from engine.models import Attempt, Execution, Step

# While an execution runs, its page is re-rendered at least this often (the "now" of its
# timeline moves), and sooner whenever a step or attempt changes.
REFRESH_SECONDS = 5


@dataclass(frozen=True, kw_only=True)
class StepView:
    step: Step
    position: int
    anchor: str
    input: JsonValue
    output: JsonValue
    attempts: list[Attempt]
    sleep_ms: object
    # None while the step still runs or sleeps: its duration then ticks in the browser.
    ended_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class ExecutionPage:
    execution: Execution
    input: JsonValue
    output: JsonValue
    steps: list[StepView]
    timeline: Timeline
    fingerprint: str
    full: bool


def present(execution: Execution, *, now: datetime, full: bool = False) -> ExecutionPage:
    """`execution` as engine.queries.get_execution returns it, steps and attempts prefetched."""
    steps = list(execution.steps.all())
    return ExecutionPage(
        execution=execution,
        input=pretty(execution.input, full=full),
        output=pretty(execution.output, full=full),
        steps=[
            _step_view(step, position, execution, full) for position, step in enumerate(steps, 1)
        ],
        timeline=build_timeline(execution, steps, now),
        fingerprint=fingerprint(execution, steps, now),
        full=full,
    )


def _step_view(step: Step, position: int, execution: Execution, full: bool) -> StepView:
    sleep_ms = step.input.get("ms") if step.is_sleep and isinstance(step.input, dict) else None
    return StepView(
        step=step,
        position=position,
        anchor=f"step-{position}",
        input=pretty(step.input, full=full),
        output=pretty(step.output, full=full),
        attempts=list(step.attempts.all()),
        sleep_ms=sleep_ms,
        ended_at=step.finished_at or execution.finished_at,
    )


def fingerprint(execution: Execution, steps: list[Step], now: datetime) -> str:
    """Changes when anything shown changes, so a poll that finds nothing new answers 204."""
    parts: list[object] = [
        execution.status,
        execution.started_at,
        execution.finished_at,
        execution.error is not None,
        execution.owner,
    ]
    if not execution.is_finished:
        parts.append(int(now.timestamp()) // REFRESH_SECONDS)
    for step in steps:
        parts += [step.name, step.status, step.attempt_count, step.finished_at, step.wake_at]
        parts += [
            (attempt.status, attempt.finished_at, attempt.worker) for attempt in step.attempts.all()
        ]
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]
