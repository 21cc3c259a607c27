"""Steps that wait for something outside the run: an event, or child executions.

A waiting step is `waiting`, with what it waits for on its row, and the run ends there (no
worker thread held). Whatever it waits for makes the execution due again (an event sent, the
last child ended, the timeout reached) and the next run asks the step whether it is ready.
Each check runs in the run's fenced transaction, so an event is consumed by one wait only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from engine.errors import EventTimeout, StepFailed
from engine.models import Event, Execution, ExecutionStatus, Step


@dataclass(frozen=True)
class Outcome:
    """A wait that is over: its output, or the error that failed it."""

    output: object = None
    error: dict | None = None


class EventWait:
    def __init__(self, event_type: str, timeout_ms: float | None) -> None:
        self.event_type = event_type
        self.timeout_ms = timeout_ms

    def start(self, step: Step) -> None:
        step.event_type = self.event_type

    def _unconsumed(self, step: Step):
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

    def start(self, step: Step) -> None:
        from engine.runtime import start_children

        ids = start_children(step, self.binding, self.inputs)
        if not self.many:
            step.child_id = ids[0]

    def _children(self, step: Step):
        return Execution.objects.filter(parent_id=step.execution_id, parent_step=step.name)

    def ready(self, step: Step, now: datetime) -> Outcome | None:
        children = list(
            self._children(step)
            .order_by("parent_index")
            .values_list("id", "status", "output", "error")
        )
        if any(status == ExecutionStatus.RUNNING for _, status, _, _ in children):
            return None
        for child_id, status, _, error in children:
            if status != ExecutionStatus.COMPLETED:
                return Outcome(error=_child_error(child_id, status, error))
        outputs = [output for _, _, output, _ in children]
        return Outcome(output=outputs if self.many else outputs[0])

    def pending(self, step: Step) -> bool:
        return not self._children(step).filter(status=ExecutionStatus.RUNNING).exists()

    def failure(self, step: Step) -> StepFailed:
        error = step.error or {}
        return StepFailed(step.name, error.get("type", "Error"), error.get("message", ""), 1)


def _child_error(child_id: object, status: str, error: dict | None) -> dict:
    if status == ExecutionStatus.CANCELLED:
        message = f"child execution {child_id} was cancelled"
    else:
        error = error or {}
        message = (
            f"child execution {child_id} failed: "
            f"{error.get('type', 'Error')}: {error.get('message', '')}"
        )
    return {"type": "ChildFailed", "message": message, "traceback": "", "childId": str(child_id)}
