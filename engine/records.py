"""Read-only views of executions, shared by the Python bindings, the API and the dashboard."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from django.db.models import QuerySet

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
    # What its body logged, printed or passed to step.log (engine.attempt_logs.LogLine).
    logs: list[dict[str, Any]] = field(default_factory=list)

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
            logs=attempt.logs or [],
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
    reused_from: str | None = None  # copied into a rerun from a step: where its function ran

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
            reused_from=str(step.reused_from) if step.reused_from else None,
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
    rerun_of: str | None = None  # the execution this one reruns
    from_step: str | None = None  # ... from this step of it, reusing the steps before
    concurrency_slot: str | None = None  # a limited binding's: "waiting" or "holding"
    code_fingerprint: str | None = None  # the workflow's code when it was created

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
            rerun_of=str(execution.rerun_of_id) if execution.rerun_of_id else None,
            from_step=execution.from_step or None,
            concurrency_slot=execution.slot or None,
            code_fingerprint=execution.code_fingerprint,
        )

    def with_steps(self, steps: list[StepRecord]) -> ExecutionRecord[InputT, OutputT]:
        return dataclasses.replace(self, steps=steps)

    @property
    def execution_id(self) -> str:
        return self.id

    @property
    def is_finished(self) -> bool:
        return self.status != "running"


STEP_FIELDS: tuple[str, ...] = ("id", "name", "status", "input", "output", "error")
STEP_FIELDS += ("started_at", "finished_at", "wake_at", "child_id", "reused_from")
ATTEMPT_FIELDS: tuple[str, ...] = ("number", "status", "error_type", "error_message")
ATTEMPT_FIELDS += ("error_traceback",)
ATTEMPT_FIELDS += ("started_at", "finished_at", "worker", "logs")


# The HTTP API's execution lists this many steps inline; GET .../steps pages the rest.
STEPS_INLINE = 100


@dataclass(frozen=True, kw_only=True)
class StepPage:
    steps: list[StepRecord]
    next_cursor: str | None  # null once every step is listed


def load_record(execution_id: object, *, workflow: str | None = None) -> ExecutionRecord[Any, Any]:
    """The execution with every step and attempt as records, in two queries whatever their
    number, read as plain rows (no model instances: this is every `.run()`'s last read)."""
    execution = _execution_row(execution_id, workflow=workflow)
    steps = _step_records(Step.objects.filter(execution=execution))
    return ExecutionRecord.of(execution, with_steps=False).with_steps(steps)


def load_record_page(
    execution_id: object, *, limit: int = STEPS_INLINE
) -> tuple[ExecutionRecord[Any, Any], str | None]:
    """The execution with its first `limit` steps, and the cursor of the next ones: two
    queries, however many steps and attempts it has (the HTTP API's answer)."""
    execution = _execution_row(execution_id)
    page = _step_page(execution.id, after=None, limit=limit)
    return ExecutionRecord.of(execution, with_steps=False).with_steps(page.steps), page.next_cursor


def load_step_page(execution_id: object, *, cursor: str | None, limit: int) -> StepPage:
    """The steps after `cursor` (a previous page's next_cursor), in the order reached."""
    from engine.queries import decode_step_cursor, parse_execution_id

    after = decode_step_cursor(cursor) if cursor else None
    execution = Execution.objects.filter(id=parse_execution_id(execution_id)).values_list("id")
    row = execution.first()
    if row is None:
        raise ExecutionNotFound(execution_id)
    return _step_page(row[0], after=after, limit=limit)


def _execution_row(execution_id: object, *, workflow: str | None = None) -> Execution:
    from engine.queries import parse_execution_id

    executions = Execution.objects.filter(id=parse_execution_id(execution_id))
    if workflow is not None:
        executions = executions.filter(workflow=workflow)
    execution: Execution | None = executions.first()
    if execution is None:
        raise ExecutionNotFound(execution_id)
    return execution


def _step_page(execution_id: uuid.UUID, *, after: int | None, limit: int) -> StepPage:
    """One query: the page's step ids are a LIMITed subquery on the (execution, position)
    index, joined with their attempts."""
    from engine.queries import check_step_limit, encode_step_cursor

    check_step_limit(limit)
    steps = Step.objects.filter(execution_id=execution_id)
    if after is not None:
        steps = steps.filter(position__gt=after)
    page_ids = steps.order_by("position").values("id")[: limit + 1]
    records, positions = _step_records_at(Step.objects.filter(id__in=page_ids))
    if len(records) <= limit:
        return StepPage(steps=records, next_cursor=None)
    return StepPage(steps=records[:limit], next_cursor=encode_step_cursor(positions[limit - 1]))


def _step_records(steps: QuerySet[Step]) -> list[StepRecord]:
    return _step_records_at(steps)[0]


def _step_records_at(steps: QuerySet[Step]) -> tuple[list[StepRecord], list[int]]:
    """Records of `steps` with their attempts, in position order, and those positions."""
    rows = steps.order_by("position", "attempts__number").values_list(
        "position", *STEP_FIELDS, *(f"attempts__{name}" for name in ATTEMPT_FIELDS)
    )
    records: dict[int, StepRecord] = {}
    positions: list[int] = []
    for position, *row in rows:
        step = dict(zip(STEP_FIELDS, row[: len(STEP_FIELDS)], strict=True))
        record = records.get(step["id"])
        if record is None:
            del step["id"]
            step["child_id"] = str(step["child_id"]) if step["child_id"] else None
            step["reused_from"] = str(step["reused_from"]) if step["reused_from"] else None
            record = records.setdefault(row[0], StepRecord(**step))
            positions.append(position)
        attempt = dict(zip(ATTEMPT_FIELDS, row[len(STEP_FIELDS) :], strict=True))
        if attempt["number"] is not None:
            record.attempts.append(_attempt_record(attempt))
    return list(records.values()), positions


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
        logs=row["logs"] or [],
    )
