"""Steps that wait for something outside the run: an event, or child executions.

A waiting step is `waiting`, with what it waits for on its row, and the run ends there (no
worker thread held). Whatever it waits for makes the execution due again (an event sent, the
last child ended, the timeout reached) and the next run asks the step whether it is ready.
Each check runs in the run's fenced transaction, so an event is consumed by one wait only.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from django.db import transaction
from django.db.models import QuerySet

from engine.claims import Suspend
from engine.errors import EventTimeout, ExecutionAlreadyFinished, StepFailed
from engine.models import Event, Execution, ExecutionStatus, Step, StepStatus
from engine.payloads import to_json


@dataclass(frozen=True)
class Outcome:
    """A wait that is over: its output, or the error that failed it."""

    output: object = None
    error: dict[str, Any] | None = None


class EventWait:
    def __init__(self, event_type: str, timeout_ms: float | None) -> None:
        self.event_type = event_type
        self.timeout_ms = timeout_ms

    def start(self, step: Step) -> None:
        step.event_type = self.event_type

    def _unconsumed(self, step: Step) -> QuerySet[Event]:
        return Event.objects.filter(
            execution_id=step.execution_id, type=self.event_type, consumed_by__isnull=True
        )

    def ready(self, step: Step, now: datetime) -> Outcome | None:
        """Consume the oldest event of its type sent to this execution, if there is one."""
        event = self._unconsumed(step).order_by("id").first()
        if event is None:
            return None
        Event.objects.filter(id=event.id).update(consumed_by=step, consumed_at=now)
        return Outcome(output=event.payload)

    def pending(self, step: Step) -> bool:
        return self._unconsumed(step).exists()

    def timed_out(self, step: Step) -> Outcome:
        error = EventTimeout(step.name, self.event_type, self.timeout_ms or 0)
        return Outcome(error={"type": "EventTimeout", "message": str(error), "traceback": ""})

    def failure(self, step: Step) -> StepFailed:
        error = step.error or {}
        if error.get("type") == "EventTimeout":
            return EventTimeout(step.name, self.event_type, (step.input or {}).get("timeoutMs", 0))
        return StepFailed(step.name, error.get("type", "Error"), error.get("message", ""), 0)


class ChildrenWait:
    """The children a step started: one (`invoke`) or many (`invoke_many`, outputs in order)."""

    def __init__(self, binding: str, inputs: list[object], *, many: bool) -> None:
        self.binding = binding
        self.inputs = inputs
        self.many = many
        self._started_here = False  # this run created the children (and queues them)

    def start(self, step: Step) -> None:
        from engine.children import start_children

        ids = start_children(step, self.binding, self.inputs)
        self._started_here = True
        if not self.many:
            step.child_id = ids[0]

    def _children(self, step: Step) -> QuerySet[Execution]:
        return Execution.objects.filter(parent_id=step.execution_id, parent_step=step.name)

    def ready(self, step: Step, now: datetime) -> Outcome | None:
        children = list(
            self._children(step)
            .order_by("parent_index")
            .values_list("id", "status", "output", "error", "run_count")
        )
        for child_id, status, _, error, _ in children:  # one that did not complete fails it now
            if status in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED):
                # The step has failed for good: its other children's work would be wasted.
                others = [child[0] for child in children if child[1] == ExecutionStatus.RUNNING]
                transaction.on_commit(partial(_cancel_all, others))
                return Outcome(error=_child_error(child_id, status, error))
        running = [child for child in children if child[1] == ExecutionStatus.RUNNING]
        if running:
            if not self._started_here:
                # The run that created them queued them after its commit, one by one: killed
                # meanwhile, it left some without a message. This replay (its recovery: a
                # waiting parent runs again only then, or once no child runs) sends them again.
                _enqueue_on_commit([child[0] for child in running if child[4] == 0])
            return None
        outputs = [child[2] for child in children]
        return Outcome(output=outputs if self.many else outputs[0])

    def pending(self, step: Step) -> bool:
        """Over already: no child runs, or one did not complete."""
        children = self._children(step)
        ended_badly = [ExecutionStatus.FAILED, ExecutionStatus.CANCELLED]
        if children.filter(status__in=ended_badly).exists():
            return True
        return not children.filter(status=ExecutionStatus.RUNNING).exists()

    def failure(self, step: Step) -> StepFailed:
        error = step.error or {}
        return StepFailed(step.name, error.get("type", "Error"), error.get("message", ""), 1)


def _enqueue_on_commit(execution_ids: list[uuid.UUID]) -> None:
    """Queue them once this run's transaction commits; a duplicate message is harmless."""
    from engine.runtime import enqueue

    def enqueue_all() -> None:
        for execution_id in execution_ids:
            enqueue(execution_id)

    if execution_ids:
        transaction.on_commit(enqueue_all)


def _child_error(child_id: object, status: str, error: dict[str, Any] | None) -> dict[str, Any]:
    if status == ExecutionStatus.CANCELLED:
        message = f"child execution {child_id} was cancelled"
    else:
        error = error or {}
        message = (
            f"child execution {child_id} failed: "
            f"{error.get('type', 'Error')}: {error.get('message', '')}"
        )
    return {"type": "ChildFailed", "message": message, "traceback": "", "childId": str(child_id)}


class WaitingSteps:
    """The `step` methods that wait; mixed into StepContext, whose run machinery they use."""

    if TYPE_CHECKING:  # StepContext's
        _clock: Callable[[], datetime]
        _steps: dict[str, Step]
        _execution: Execution

        def _enter(self, name: str, call: str, *, positioned: bool = True) -> None: ...
        def _write(self, *, durable: bool = True) -> AbstractContextManager[None]: ...
        def _next_position(self) -> int: ...
        def _latch(self, signal: BaseException) -> BaseException: ...

    def wait_for_event(
        self, name: str, event_type: str, *, timeout_ms: float | None = None
    ) -> object:
        """Wait, holding no worker, for an event of `event_type` sent to this execution (one
        sent earlier counts); its payload. Past `timeout_ms` the step fails: EventTimeout."""
        _check_name(name)
        if not isinstance(event_type, str) or not event_type.strip() or len(event_type) > 200:
            raise ValueError(
                f"step.wait_for_event({name!r}, event_type): event_type must be a non-empty "
                f"string of at most 200 characters, got {event_type!r}"
            )
        timeout_at = None
        if timeout_ms is not None:
            _check_milliseconds(f"step.wait_for_event({name!r}, timeout_ms=...)", timeout_ms)
            timeout_at = self._clock() + timedelta(milliseconds=timeout_ms)
        wait = EventWait(event_type, timeout_ms)
        snapshot = {"eventType": event_type, "timeoutMs": timeout_ms}
        return self._wait(name, wait, f"step.wait_for_event({name!r})", snapshot, timeout_at)

    def invoke(self, name: str, binding: str, input: object = None) -> object:
        """Start one child execution of `binding` (once, however often this replays), wait for
        it holding no worker, and return its output; a failed child fails the step."""
        _check_name(name)
        wait = ChildrenWait(_binding_name(binding), [_child_input(name, input)], many=False)
        snapshot = {"binding": wait.binding, "input": wait.inputs[0]}
        return self._wait(name, wait, f"step.invoke({name!r})", snapshot, None)

    def invoke_many(self, name: str, binding: str, inputs: list[object]) -> list[object]:
        """One child per input, run by any workers at once; their outputs in input order."""
        _check_name(name)
        if not isinstance(inputs, list | tuple):
            raise TypeError(f"step.invoke_many({name!r}, binding, inputs): inputs must be a list")
        inputs = [_child_input(name, each) for each in inputs]
        wait = ChildrenWait(_binding_name(binding), inputs, many=True)
        snapshot = {"binding": wait.binding, "children": len(inputs)}
        if not inputs:
            self._enter(name, f"step.invoke_many({name!r})", positioned=False)
            return []
        outputs = self._wait(name, wait, f"step.invoke_many({name!r})", snapshot, None)
        return cast(list[object], outputs)

    def _wait(
        self,
        name: str,
        wait: EventWait | ChildrenWait,
        call: str,
        snapshot: object,
        timeout_at: datetime | None,
    ) -> object:
        self._enter(name, call)
        step = self._steps.get(name)
        if step is not None and step.status == StepStatus.COMPLETED:
            return step.output
        if step is not None and step.status == StepStatus.FAILED:
            raise wait.failure(step)
        now = self._clock()
        with self._write():
            if step is None:
                step = Step(
                    execution=self._execution,
                    name=name,
                    position=self._next_position(),
                    status=StepStatus.WAITING,
                    input=snapshot,
                    started_at=now,
                    wake_at=timeout_at,
                )
                wait.start(step)
                step.save()
                self._steps[name] = step
            outcome = wait.ready(step, now)
            if (
                outcome is None
                and isinstance(wait, EventWait)
                and step.wake_at is not None
                and step.wake_at <= now
            ):
                outcome = wait.timed_out(step)
            if outcome is not None:
                step.output, step.error, step.finished_at = outcome.output, outcome.error, now
                step.status = StepStatus.FAILED if outcome.error else StepStatus.COMPLETED
                step.wake_at = None
                step.save(update_fields=["output", "error", "finished_at", "status", "wake_at"])
        if outcome is None:
            raise self._latch(Suspend(step.wake_at, ready=lambda: wait.pending(step)))
        if outcome.error:
            raise wait.failure(step)
        return step.output


def _check_milliseconds(what: str, ms: object) -> None:
    if isinstance(ms, bool) or not isinstance(ms, int | float) or not ms >= 0 or math.isinf(ms):
        raise ValueError(f"{what} needs a number of milliseconds >= 0, got {ms!r}")


def _binding_name(binding: object) -> str:
    """The binding as its name; unknown ones fail here, before anything is written."""
    from engine import registry

    name = getattr(getattr(binding, "config", None), "binding", binding)
    if not isinstance(name, str):
        raise TypeError(
            f"a child's binding must be a binding name or env.<BINDING>, got {binding!r}"
        )
    return registry.current().config.binding(name).binding


def _child_input(name: str, input: object) -> object:
    return to_json(input, f"the input of a child of step {name!r}")


def _cancel_all(execution_ids: Sequence[object]) -> None:
    from engine.runtime import cancel_execution

    for execution_id in execution_ids:
        with contextlib.suppress(ExecutionAlreadyFinished):
            cancel_execution(execution_id)


def _check_name(name: object) -> None:
    from engine.context import _check_step_name  # the rules of every step's name

    _check_step_name(name)
