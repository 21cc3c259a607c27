"""Rerun from a step: a new execution that starts with a copy of the steps before that step.

The copied steps are the stored prefix of the new execution, by position, so its replay returns
their outputs (or their failures) without calling their functions, and the code-change guard
checks the new run against them as against any stored steps. They are copied in the
transaction that creates the execution, so a rerun is either whole or not there at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from engine.errors import PloyError
from engine.models import Execution, Step, StepStatus

# The steps a rerun may start from have ended; the steps copied before it ended with an
# outcome a replay can hand back (an output, or the failure the handler caught).
ENDED = (StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.CANCELLED)
REUSABLE = (StepStatus.COMPLETED, StepStatus.FAILED)
NAMES_SHOWN = 20


class InvalidRerun(PloyError):
    """A `fromStep` that names no step a rerun can start from; the message says which do."""


class _KeepInput:
    def __repr__(self) -> str:
        return "KEEP_INPUT"


# `input=` not given: the rerun keeps the execution's input (None is an input like any other).
KEEP_INPUT = _KeepInput()


@dataclass(frozen=True, kw_only=True)
class Fork:
    """What a rerun from `from_step` copies from `source_id`: the steps before it."""

    from_step: str
    source_id: uuid.UUID
    steps: list[Step]

    def copy_into(self, execution: Execution) -> None:
        """The copies, renumbered from 0 in their order; in the caller's transaction."""
        copies = [
            _copy(step, execution, position, self.source_id)
            for position, step in enumerate(self.steps)
        ]
        Step.objects.bulk_create(copies, batch_size=500)


def plan_fork(execution: Execution, from_step: str) -> Fork:
    """The steps of `execution` before `from_step`, checked: `from_step` is a top-level step
    that has ended, and every step before it can be replayed from its stored outcome."""
    steps = list(Step.objects.filter(execution=execution).order_by("position"))
    by_name = {step.name: step for step in steps}
    target = by_name.get(from_step)
    if target is None:
        raise InvalidRerun(
            f"execution {execution.id} has no step {from_step!r}: fromStep must be one of "
            f"{_names(startable(steps))}"
        )
    if target.branch_of:
        raise InvalidRerun(
            f"step {from_step!r} is a branch of the parallel step {target.branch_of!r}, whose "
            f"branches run again together: rerun from {target.branch_of!r}"
        )
    if target.status not in ENDED:
        raise InvalidRerun(
            f"step {from_step!r} has not ended ({target.status}): rerun from a step that has "
            f"ended ({_names(startable(steps))}), or cancel the execution first"
        )
    before = [step for step in steps if step.position < target.position]
    copied_groups = {step.name for step in before if not step.branch_of}
    prefix = [step for step in before if not step.branch_of or step.branch_of in copied_groups]
    unfinished = next((step for step in prefix if step.status not in REUSABLE), None)
    if unfinished is not None:
        raise InvalidRerun(
            f"step {unfinished.name!r} before {from_step!r} did not end ({unfinished.status}), "
            f"so its outcome cannot be reused: rerun from {unfinished.name!r} or earlier"
        )
    return Fork(from_step=from_step, source_id=execution.id, steps=prefix)


def startable(steps: list[Step]) -> list[str]:
    """The names a rerun may start from, in order: top-level steps that ended, each after
    steps that all ended with an outcome."""
    names = []
    for step in steps:
        if step.branch_of:
            continue
        if step.status in ENDED:
            names.append(step.name)
        if step.status not in REUSABLE:
            break
    return names


def can_start_from(step: Step) -> bool:
    """Whether a step's own state lets a rerun start from it (a page showing it needs no other
    row: the steps before an ended top-level step have all ended)."""
    return not step.branch_of and step.status in ENDED


def _copy(step: Step, execution: Execution, position: int, source_id: uuid.UUID) -> Step:
    return Step(
        execution=execution,
        name=step.name,
        position=position,
        status=step.status,
        input=step.input,
        output=step.output,
        error=step.error,
        retries=step.retries,
        attempt_count=step.attempt_count,
        failure_count=step.failure_count,
        started_at=step.started_at,
        finished_at=step.finished_at,
        event_type=step.event_type,
        child_id=step.child_id,
        branch_of=step.branch_of,
        # Where its function ran: a step reused twice still names that first execution.
        reused_from=step.reused_from or source_id,
    )


def _names(names: list[str]) -> str:
    if not names:
        return "(none: no step has ended yet)"
    shown = ", ".join(repr(name) for name in names[:NAMES_SHOWN])
    more = len(names) - NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown
