"""Read-only views of executions, shared by the Python bindings, the API and the dashboard."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from engine.errors import ExecutionNotFound
from engine.models import Attempt, Execution, Step

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


@dataclass(frozen=True, kw_only=True)
class AttemptRecord:
    number: int
    status: str
    error: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None
    worker: str = ""  # the id of the worker that ran it

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptRecord:
        error = None
        if attempt.error_type:
            error = {
                "type": attempt.error_type,
                "message": attempt.error_message,
                "traceback": attempt.error_traceback,
            }
        return cls(
            number=attempt.number,
            status=attempt.status,
            error=error,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            worker=attempt.worker,
        )


@dataclass(frozen=True, kw_only=True)
class StepRecord:
    name: str
    status: str
    input: object
    output: object
    error: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None
    wake_at: datetime | None
    attempts: list[AttemptRecord] = field(default_factory=list)
    child_id: str | None = None  # the child execution of an invoke step

    @classmethod
    def of(cls, step: Step) -> StepRecord:
        return cls(
            name=step.name,
            status=step.status,
            input=step.input,
            output=step.output,
            error=step.error,
            started_at=step.started_at,
            finished_at=step.finished_at,
            wake_at=step.wake_at,
            attempts=[AttemptRecord.of(attempt) for attempt in step.attempts.all()],
            child_id=str(step.child_id) if step.child_id else None,
        )


@dataclass(frozen=True, kw_only=True)
class ExecutionRecord(Generic[InputT, OutputT]):
    """Typed by the binding it was read through (`WorkflowBinding[Input, Output]`)."""

    id: str
    binding: str
    workflow: str
    status: str
    input: InputT
    output: OutputT | None
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[StepRecord] | None = None
    parent_id: str | None = None  # the execution whose invoke step started this one

    @classmethod
    def of(
        cls: type[ExecutionRecord[Any, Any]], execution: Execution, *, with_steps: bool = True
    ) -> ExecutionRecord[Any, Any]:
        """With steps, `execution` must come with steps and attempts prefetched."""
        return cls(
            id=str(execution.id),
            binding=execution.binding,
            workflow=execution.workflow,
            status=execution.status,
            input=execution.input,
            output=execution.output,
            error=execution.error,
            created_at=execution.created_at,
            started_at=execution.started_at,
            finished_at=execution.finished_at,
            steps=[StepRecord.of(step) for step in execution.steps.all()] if with_steps else None,
            parent_id=str(execution.parent_id) if execution.parent_id else None,
        )

    def with_steps(self, steps: list[StepRecord]) -> ExecutionRecord[InputT, OutputT]:
        return dataclasses.replace(self, steps=steps)

    @property
    def execution_id(self) -> str:
        return self.id

    @property
    def is_finished(self) -> bool:
        return self.status != "running"


STEP_FIELDS: tuple[str, ...] = (
    "id",
    "name",
    "status",
    "input",
    "output",
    "error",
    "started_at",
    "finished_at",
)
STEP_FIELDS += ("wake_at", "child_id")
ATTEMPT_FIELDS: tuple[str, ...] = (
    "number",
    "status",
    "error_type",
    "error_message",
    "error_traceback",
)
ATTEMPT_FIELDS += ("started_at", "finished_at", "worker")


def load_record(execution_id: object, *, workflow: str | None = None) -> ExecutionRecord[Any, Any]:
    """The execution with its steps and attempts as records, in two queries whatever their
    number, read as plain rows (no model instances: this is every `.run()`'s last read)."""
    from engine.queries import parse_execution_id

    executions = Execution.objects.filter(id=parse_execution_id(execution_id))
    if workflow is not None:
        executions = executions.filter(workflow=workflow)
    execution = executions.first()
    if execution is None:
        raise ExecutionNotFound(execution_id)
    rows = (
        Step.objects.filter(execution=execution)
        .order_by("position", "attempts__number")
        .values_list(*STEP_FIELDS, *(f"attempts__{name}" for name in ATTEMPT_FIELDS))
    )
    steps: dict[int, StepRecord] = {}
    for row in rows:
        step = dict(zip(STEP_FIELDS, row[: len(STEP_FIELDS)], strict=True))
        record = steps.get(step["id"])
        if record is None:
            del step["id"]
            step["child_id"] = str(step["child_id"]) if step["child_id"] else None
            record = steps.setdefault(row[0], StepRecord(**step))
        attempt = dict(zip(ATTEMPT_FIELDS, row[len(STEP_FIELDS) :], strict=True))
        if attempt["number"] is not None:
            record.attempts.append(_attempt_record(attempt))
    return ExecutionRecord.of(execution, with_steps=False).with_steps(list(steps.values()))


def _attempt_record(row: dict[str, Any]) -> AttemptRecord:
    error = None
    if row["error_type"]:
        error = {
            "type": row["error_type"],
            "message": row["error_message"],
            "traceback": row["error_traceback"],
        }
    return AttemptRecord(
        number=row["number"],
        status=row["status"],
        error=error,
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        worker=row["worker"],
    )
