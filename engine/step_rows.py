"""The hot path's writes of a new step and its attempt, in plain SQL.

A durable step is two short transactions: "attempt N of step S is running" before its body
runs, and "it completed with this output" after. Profiled, the ORM's per-call cost (compiling
`create()` and `save()`) was most of a step's time, so these few statements are written once,
here, with the fields' own adapters for their values.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connection

from engine.models import Attempt, AttemptStatus, Step, StepStatus

# Passed to the driver as they are.
PLAIN_FIELDS = {"CharField", "TextField", "PositiveIntegerField", "IntegerField", "BigAutoField"}


@cache
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    values = ", ".join("%s" for _ in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) RETURNING id"


def _prep(model: type[Step] | type[Attempt], column: str, value: object) -> Any:
    """The value as the field itself would adapt it (JSON text on SQLite, jsonb on PostgreSQL)."""
    return _adapter(model, column)(value)


@cache
def _adapter(model: type[Step] | type[Attempt], column: str) -> Callable[[Any], Any]:
    field: Any = model._meta.get_field(column.removesuffix("_id"))
    kind = field.get_internal_type()
    if kind in PLAIN_FIELDS:
        return lambda value: value
    if kind == "DateTimeField":
        return lambda value: connection.ops.adapt_datetimefield_value(value)
    if kind == "JSONField":  # None is SQL NULL, as the ORM stores it
        return lambda value: (
            None if value is None else connection.ops.adapt_json_value(value, field.encoder)
        )
    target = field.target_field if field.is_relation else field
    return lambda value: target.get_db_prep_save(value, connection)


def _insert(model: type[Step] | type[Attempt], values: dict[str, object]) -> int:
    columns = tuple(values)
    sql = _insert_sql(model._meta.db_table, columns)
    with connection.cursor() as cursor:
        cursor.execute(sql, [_prep(model, column, values[column]) for column in columns])
        step_id: int = cursor.fetchone()[0]
        return step_id


def insert_step(
    *,
    execution_id: object,
    name: str,
    position: int,
    input: object,
    retries: int,
    now: datetime,
    branch_of: str = "",
) -> Step:
    values = {
        "execution_id": execution_id,
        "name": name,
        "position": position,
        "status": StepStatus.RUNNING,
        "input": input,
        "retries": retries,
        "attempt_count": 1,
        "failure_count": 0,
        "started_at": now,
        "event_type": "",
        "branch_of": branch_of,
    }
    step_id = _insert(Step, values)
    return Step(id=step_id, **values)


def insert_attempt(*, step: Step, now: datetime, worker: str) -> int:
    values = {
        "step_id": step.id,
        "number": step.attempt_count,
        "status": AttemptStatus.RUNNING,
        "error_type": "",
        "error_message": "",
        "error_traceback": "",
        "started_at": now,
        "worker": worker,
    }
    return _insert(Attempt, values)


def complete(
    *, step: Step, attempt_id: int, output: object, now: datetime, logs: object = None
) -> None:
    """The attempt and its step completed, with the step's output; the attempt's logs, if its
    body wrote any, go in the same statement (none: the same statement as ever)."""
    finished_at = _prep(Step, "finished_at", now)
    status = AttemptStatus.COMPLETED.value
    with connection.cursor() as cursor:
        if logs is None:
            sql = "UPDATE engine_attempt SET status = %s, finished_at = %s WHERE id = %s"
            cursor.execute(sql, [status, finished_at, attempt_id])
        else:
            sql = "UPDATE engine_attempt SET status = %s, finished_at = %s, logs = %s WHERE id = %s"
            cursor.execute(sql, [status, finished_at, _prep(Attempt, "logs", logs), attempt_id])
        cursor.execute(
            "UPDATE engine_step SET status = %s, output = %s, finished_at = %s WHERE id = %s",
            [StepStatus.COMPLETED.value, _prep(Step, "output", output), finished_at, step.id],
        )
