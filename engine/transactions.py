"""`step.transaction`: a step whose writes and whose output commit in one transaction.

On Django's own database (`db=None`) the run's fenced engine transaction runs `fn` and
completes the step: a worker that lost its claim fails the fence first and writes nothing. On
an `env` database binding (`db="DB"`) `fn` and a row of `ploy_internal_step_outputs` commit
together in that database, and the engine's step is completed from that row afterwards, or by
the next run if the worker died in between. The row's key (execution, step) lets one attempt
commit at most, even while a worker declared dead is still inside its attempt.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection

from engine import step_rows
from engine.context import StepContext, _check_step_name, _synchronous
from engine.database import Database
from engine.errors import ConfigError, NonRetryableError, PloyError, StepMisuse
from engine.models import Attempt, AttemptStatus, Step, StepStatus
from engine.payloads import to_json
from engine.server_database import IDLE_LIMIT, idle_limit

OUTPUTS_TABLE = "ploy_internal_step_outputs"
CREATE_OUTPUTS_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {OUTPUTS_TABLE} ("
    "execution_id TEXT NOT NULL, step_name TEXT NOT NULL, epoch INTEGER NOT NULL, "
    "attempt INTEGER NOT NULL, output TEXT NOT NULL, committed_at TEXT NOT NULL, "
    "PRIMARY KEY (execution_id, step_name))"
)
# What a binding's database raises on its own (ConfigError: it cannot be reached at all).
BINDING_ERRORS = (sqlite3.Error, psycopg.Error, ConfigError)


class BodyFailed(Exception):
    """`fn` raised, or returned what cannot be stored: its transaction rolled back."""

    def __init__(self, error: Exception, *, final: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.final = final


class AlreadyCommitted(Exception):
    """Another attempt of the step committed first: this one rolls back and takes its output."""


def run_transaction(
    context: StepContext, name: str, fn: Callable[[Any], object], *, db: str | None
) -> object:
    call = f"step.transaction({name!r})"
    _check_step_name(name, "step.transaction")
    if not callable(fn):
        raise TypeError(f"{call}: fn must be a function of one argument (the database), got {fn!r}")
    database = None if db is None else _binding(call, db)
    context._enter(name, call)
    step = context._steps.get(name)
    if step is not None:
        if step.status == StepStatus.COMPLETED:
            return step.output
        if database is not None:
            # The worker died (or lost its claim) after the binding committed: finish the step.
            stored = _stored_if_reachable(database, str(context._execution.id), name)
            if stored is not None:
                return complete_from(context, step, *stored)
        context._check_can_run_again(step)
    step, attempt = context._start_attempt(name, step, None, None, "")
    context._running = name
    try:
        if database is None:
            return _commit_in_django(context, step, attempt, fn)
        return _commit_in_binding(context, step, attempt, fn, database)
    except BodyFailed as failed:
        error = failed.error
        raise context._record_failure(step, attempt, error, final=failed.final) from error
    finally:
        context._running = None


def _binding(call: str, db: object) -> Database:
    from engine.bindings import current_env

    databases = current_env().databases
    if not isinstance(db, str) or db not in databases:
        known = ", ".join(sorted(databases)) or "none"
        raise ValueError(
            f"{call}: db={db!r} is not a database binding of ploy.yaml (db: defines {known}); "
            "give one of them, or None for Django's own database"
        )
    return databases[db]


def _call(name: str, fn: Callable[[Any], object], database: object) -> object:
    """`fn(database)` as the step's JSON output; what it raises comes out as BodyFailed."""
    try:
        value = fn(database)
    except Exception as error:
        raise BodyFailed(error, final=isinstance(error, StepMisuse | NonRetryableError)) from error
    try:
        return to_json(_synchronous(name, value), f"the output of step {name!r}")
    except PloyError as error:
        raise BodyFailed(error, final=True) from None  # retrying cannot make it storable


def _commit_in_django(
    context: StepContext, step: Step, attempt: int, fn: Callable[[Any], object]
) -> object:
    # The fence check is this transaction's first statement and locks the execution (a row
    # lock on PostgreSQL, the write lock on SQLite) until the commit.
    with context._write():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(IDLE_LIMIT, [str(idle_limit())])
        output = _call(step.name, fn, DEFAULT_DB_ALIAS)
        now = context._clock()
        step_rows.complete(step=step, attempt_id=attempt, output=output, now=now)
    step.status, step.output, step.finished_at = StepStatus.COMPLETED, output, now
    return output


def _commit_in_binding(
    context: StepContext, step: Step, attempt: int, fn: Callable[[Any], object], database: Database
) -> object:
    execution_id = str(context._execution.id)
    failure: BodyFailed | None = None
    try:
        database.create_table(CREATE_OUTPUTS_TABLE)
        with database.transaction():
            output = _call(step.name, fn, database)
            number = step.attempt_count
            if not _record_output(database, execution_id, step.name, context, number, output):
                raise AlreadyCommitted()
    except AlreadyCommitted:
        pass
    except BodyFailed as failed:
        failure = failed
    except BINDING_ERRORS as error:  # locked, connection lost, even at COMMIT: retried
        failure = BodyFailed(error, final=False)
    else:
        context._record_success(step, attempt, output)
        return output
    # Rolled back; but another attempt (a worker declared dead, still running) may have
    # committed this step meanwhile, or a lost COMMIT may have landed after all.
    stored = _stored_if_reachable(database, execution_id, step.name)
    if stored is not None:
        return complete_from(context, step, *stored)
    raise failure or BodyFailed(RuntimeError(f"{OUTPUTS_TABLE} lost its row"), final=False)


def _stored_if_reachable(
    database: Database, execution_id: str, name: str
) -> tuple[int, object] | None:
    try:
        return stored_output(database, execution_id, name)
    except BINDING_ERRORS:
        return None  # the attempt runs (again), and fails like any on an unreachable database


def _record_output(
    database: Database,
    execution_id: str,
    name: str,
    context: StepContext,
    attempt: int,
    output: object,
) -> bool:
    """The output's row, in the step's transaction; False if another attempt committed one."""
    inserted = database.prepare(
        f"INSERT INTO {OUTPUTS_TABLE} (execution_id, step_name, epoch, attempt, output, "
        "committed_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (execution_id, step_name) DO NOTHING"
    ).bind(
        execution_id,
        name,
        context._claim.epoch,
        attempt,
        json.dumps(output),
        datetime.now(UTC).isoformat(),
    )
    return bool(inserted.run()["meta"]["changes"] == 1)


def stored_output(database: Database, execution_id: str, name: str) -> tuple[int, object] | None:
    """(attempt number, output) of the step's committed transaction, if one committed."""
    database.create_table(CREATE_OUTPUTS_TABLE)
    row = (
        database.prepare(
            f"SELECT attempt, output FROM {OUTPUTS_TABLE} WHERE execution_id = ? AND step_name = ?"
        )
        .bind(execution_id, name)
        .first()
    )
    if row is None:
        return None
    assert isinstance(row, dict)
    return int(row["attempt"]), json.loads(row["output"])


def complete_from(context: StepContext, step: Step, committed: int, output: object) -> object:
    """Complete the engine's step with the output a transaction of the binding committed: that
    attempt completed, any other still `running` rolled back."""
    now = context._clock()
    with context._write():
        attempts = Attempt.objects.filter(step=step)
        attempts.filter(number=committed).update(
            status=AttemptStatus.COMPLETED,
            error_type="",
            error_message="",
            error_traceback="",
            finished_at=now,
        )
        attempts.filter(status=AttemptStatus.RUNNING).exclude(number=committed).update(
            status=AttemptStatus.FAILED,
            error_type="RolledBack",
            error_message=f"this attempt's transaction rolled back: attempt {committed} "
            "committed the step",
            finished_at=now,
        )
        Step.objects.filter(pk=step.pk).update(
            status=StepStatus.COMPLETED, output=output, finished_at=now, wake_at=None
        )
    step.status, step.output, step.finished_at, step.wake_at = (
        StepStatus.COMPLETED,
        output,
        now,
        None,
    )
    return output
