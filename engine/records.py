"""Read-only views of executions, shared by the Python bindings, the API and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from engine.models import Attempt, Execution, Step


@dataclass(frozen=True, kw_only=True)
class AttemptRecord:
    number: int
    status: str
    error: dict | None
    started_at: datetime | None
    finished_at: datetime | None

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
        )


@dataclass(frozen=True, kw_only=True)
class StepRecord:
    name: str
    status: str
    input: object
    output: object
    error: dict | None
    started_at: datetime | None
    finished_at: datetime | None
    wake_at: datetime | None
    attempts: list[AttemptRecord] = field(default_factory=list)

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
        )


@dataclass(frozen=True, kw_only=True)
class ExecutionRecord:
    id: str
    binding: str
    workflow: str
    status: str
    input: object
    output: object
    error: dict | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[StepRecord] | None = None

    @classmethod
    def of(cls, execution: Execution, *, with_steps: bool = True) -> ExecutionRecord:
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
        )

    @property
    def execution_id(self) -> str:
        return self.id

    @property
    def is_finished(self) -> bool:
        return self.status != "running"
