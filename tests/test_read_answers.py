"""The API's read answers, built as plain dicts by engine.read_answers, are byte for byte what
ninja makes of the Schemas that document them, for every kind of execution, step and attempt."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from ninja.responses import NinjaJSONEncoder

from engine import queries, records
from engine.models import Attempt, Execution, Step
from engine.records import ExecutionRecord
from engine.schemas import (
    ExecutionOut,
    ExecutionPageOut,
    ExecutionSummaryOut,
    StepOut,
    StepPageOut,
)

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(microsecond=123456)
ODD_VALUES = {"é": "ünïcode ✓", "nested": [1, 2.5, None, True, {"deep": [[]]}], "big": 10**30}
LOG_LINES = [
    {
        "at": "2026-12-01T10:00:00.001Z",
        "level": "INFO",
        "logger": "app",
        "message": "hi",
        "data": None,
    },
    {"at": "2026-12-01T10:00:00.002Z", "level": "PRINT", "logger": "stdout", "message": "x\n"},
    {
        "at": "2026-12-01T10:00:00.003Z",
        "level": "INFO",
        "logger": "step.log",
        "message": "done",
        "data": {"rows": 3, "names": ["a", "b"]},
    },
]


def at(ms: float) -> object:
    return NOW + timedelta(milliseconds=ms)


def rich_execution(*, steps: int = 6) -> Execution:
    """Every field an answer can carry: a rerun from a step, a slot, a fingerprint, a child,
    reused steps, failed attempts with tracebacks, logs with and without data, a wake time."""
    original = Execution.objects.create(
        binding="DATA_FLOW", workflow="data_processing", status="failed", created_at=at(0)
    )
    execution = Execution.objects.create(
        binding="DATA_FLOW",
        workflow="data_processing",
        status="running",
        input=ODD_VALUES,
        output=None,
        error={"type": "ValueError", "message": "bad", "traceback": "Traceback ..."},
        created_at=at(1),
        started_at=at(2.5),
        rerun_of=original,
        from_step="step 3",
        slot="holding",
        code_fingerprint="abc123",
    )
    child = Execution.objects.create(
        binding="SLEEPER",
        workflow="sleeper",
        status="completed",
        input=[1, 2],
        output="done",
        created_at=at(3),
        started_at=at(4),
        finished_at=at(5),
        parent=execution,
        parent_step="step 2",
    )
    for position in range(steps):
        step = Step.objects.create(
            execution=execution,
            name=f"step {position}",
            position=position,
            status=["completed", "failed", "waiting", "sleeping", "running", "cancelled"][
                position % 6
            ],
            input={"binding": "SLEEPER"} if position == 2 else ODD_VALUES if position % 2 else None,
            output=[position, "out"] if position % 3 == 0 else None,
            error={"type": "KeyError", "message": "'x'"} if position % 6 == 1 else None,
            started_at=at(10 + position),
            finished_at=at(20 + position) if position % 2 == 0 else None,
            wake_at=at(99.999) if position % 6 == 3 else None,
            child_id=child.id if position == 2 else None,
            reused_from=original.id if position == 0 else None,
            attempt_count=position % 4,
        )
        for number in range(1, position % 4 + 1):
            failed = number < position % 4
            Attempt.objects.create(
                step=step,
                number=number,
                status="failed" if failed else "completed",
                error_type="RuntimeError" if failed else "",
                error_message="boom ✗" if failed else "",
                error_traceback="Traceback (most recent call last):\n  ..." if failed else "",
                started_at=at(30 + number),
                finished_at=at(40 + number) if number % 2 else None,
                worker=f"worker-{number}",
                logs=LOG_LINES[: number + 1] if number < 3 else None,
            )
    return execution


def rendered(data: object) -> bytes:
    """What ninja's JSON renderer writes (the API's renderer)."""
    return json.dumps(data, cls=NinjaJSONEncoder).encode()


def schema_execution(execution_id: object) -> bytes:
    record, cursor = records.load_record_page(execution_id)
    answer = ExecutionOut.model_validate(record).model_copy(update={"steps_next_cursor": cursor})
    return rendered(answer.model_dump(by_alias=True))


def schema_step_page(execution_id: object, cursor: str | None, limit: int) -> bytes:
    page = records.load_step_page(execution_id, cursor=cursor, limit=limit)
    items = [StepOut.model_validate(step) for step in page.steps]
    return rendered(
        StepPageOut(items=items, next_cursor=page.next_cursor).model_dump(by_alias=True)
    )


def schema_list(**filters: object) -> bytes:
    page = queries.list_executions(**filters)  # type: ignore[arg-type]
    items = [
        ExecutionSummaryOut.model_validate(ExecutionRecord.of(execution, with_steps=False))
        for execution in page.items
    ]
    answer = ExecutionPageOut(items=items, next_cursor=page.next_cursor)
    return rendered(answer.model_dump(by_alias=True))


def test_an_execution_is_what_its_schema_would_answer(client):
    execution = rich_execution()
    response = client.get(f"/api/executions/{execution.id}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response.content == schema_execution(execution.id)
    body = response.json()
    assert body["rerunOf"] and body["fromStep"] == "step 3" and body["concurrencySlot"] == "holding"
    assert body["steps"][2]["childId"] and body["steps"][0]["reusedFrom"]
    assert body["steps"][3]["attempts"][0]["logs"][1]["data"] is None  # stored without "data"
    assert body["createdAt"].endswith(".124Z") or body["createdAt"].endswith(".123Z")


def test_a_child_and_a_finished_execution_are_what_their_schema_would_answer(client):
    execution = rich_execution()
    child = Execution.objects.get(parent=execution)
    for each in (child, execution.rerun_of):
        response = client.get(f"/api/executions/{each.id}")
        assert response.content == schema_execution(each.id)


def test_every_page_of_steps_is_what_its_schema_would_answer(client):
    execution = rich_execution(steps=130)
    first = client.get(f"/api/executions/{execution.id}").json()
    assert len(first["steps"]) == 100 and first["stepsNextCursor"]
    cursor, seen = None, 0
    while True:
        query = f"?limit=7&cursor={cursor}" if cursor else "?limit=7"
        response = client.get(f"/api/executions/{execution.id}/steps{query}")
        assert response.content == schema_step_page(execution.id, cursor, 7)
        page = response.json()
        seen += len(page["items"])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == 130


@pytest.mark.parametrize(
    "query", ["", "?limit=2", "?workflow=sleeper", "?status=running", "?parentId={id}"]
)
def test_the_list_is_what_its_schema_would_answer(client, query):
    execution = rich_execution(steps=3)
    query = query.format(id=execution.id)
    filters = {"limit": 50}
    for pair in query.lstrip("?").split("&") if query else []:
        name, value = pair.split("=")
        filters[{"parentId": "parent_id"}.get(name, name)] = (
            int(value) if name == "limit" else value
        )
    response = client.get(f"/api/executions{query}")
    assert response.status_code == 200
    assert response.content == schema_list(**filters)
    assert response.json()["items"]


def test_a_cancel_answers_the_execution_as_a_read_does(client):
    execution = rich_execution(steps=3)
    Execution.objects.filter(id=execution.id).update(error=None)  # not failing: cancellable
    response = client.post(f"/api/executions/{execution.id}/cancel")
    assert response.status_code == 200
    assert response.content == schema_execution(execution.id)
    assert response.json()["status"] == "cancelled"


def test_a_page_of_100_steps_takes_two_queries_whatever_its_attempts(client):
    execution = rich_execution(steps=120)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(f"/api/executions/{execution.id}/steps?cursor=9&limit=100")
    assert response.status_code == 200
    assert len(captured) == 2
