"""The API's read answers as plain JSON-ready dicts, built straight from engine.records.

They hold what the Schemas of engine.schemas (which document them in the OpenAPI schema) would
dump, key for key and in the same order, without validating each step, attempt and log line:
that validation cost ten times the queries of a page of 100 steps. tests/test_read_answers.py
compares the two on every kind of record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.queries import Page
from engine.records import AttemptRecord, ExecutionRecord, StepPage, StepRecord
from engine.schemas import utc_text

JsonDict = dict[str, Any]


def execution_answer(record: ExecutionRecord[Any, Any], steps_next_cursor: str | None) -> JsonDict:
    """ExecutionOut: the execution with its steps (the first page of them)."""
    answer = execution_summary(record)
    answer["steps"] = [step_answer(step) for step in record.steps or ()]
    answer["stepsNextCursor"] = steps_next_cursor
    return answer


def step_page_answer(page: StepPage) -> JsonDict:
    """StepPageOut."""
    return {"items": [step_answer(step) for step in page.steps], "nextCursor": page.next_cursor}


def execution_page_answer(page: Page) -> JsonDict:
    """ExecutionPageOut: the rows of `page` (Execution instances) without their steps."""
    items = [ExecutionRecord.of(execution, with_steps=False) for execution in page.items]
    return {"items": [execution_summary(item) for item in items], "nextCursor": page.next_cursor}


def execution_summary(record: ExecutionRecord[Any, Any]) -> JsonDict:
    """ExecutionSummaryOut."""
    return {
        "id": record.id,
        "binding": record.binding,
        "workflow": record.workflow,
        "status": record.status,
        "input": record.input,
        "output": record.output,
        "error": record.error,
        "createdAt": utc_text(record.created_at),
        "startedAt": _time(record.started_at),
        "finishedAt": _time(record.finished_at),
        "parentId": record.parent_id,
        "rerunOf": record.rerun_of,
        "fromStep": record.from_step,
        "concurrencySlot": record.concurrency_slot,
        "codeFingerprint": record.code_fingerprint,
    }


def step_answer(step: StepRecord) -> JsonDict:
    """StepOut."""
    return {
        "name": step.name,
        "status": step.status,
        "input": step.input,
        "output": step.output,
        "error": step.error,
        "startedAt": _time(step.started_at),
        "finishedAt": _time(step.finished_at),
        "wakeAt": _time(step.wake_at),
        "attempts": [attempt_answer(attempt) for attempt in step.attempts],
        "childId": step.child_id,
        "reusedFrom": step.reused_from,
    }


def attempt_answer(attempt: AttemptRecord) -> JsonDict:
    """AttemptOut, with its AttemptErrorOut and AttemptLogLineOut."""
    error = attempt.error
    return {
        "number": attempt.number,
        "status": attempt.status,
        "error": None
        if error is None
        else {"type": error["type"], "message": error["message"], "traceback": error["traceback"]},
        "startedAt": _time(attempt.started_at),
        "finishedAt": _time(attempt.finished_at),
        "worker": attempt.worker,
        "logs": [
            {
                "at": line["at"],
                "level": line["level"],
                "logger": line["logger"],
                "message": line["message"],
                "data": line.get("data"),
            }
            for line in attempt.logs
        ],
    }


def _time(value: datetime | None) -> str | None:
    return None if value is None else utc_text(value)
