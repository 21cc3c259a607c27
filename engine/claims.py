"""A worker's claim on an execution: taken atomically, fenced on every write of the run.

The claim is (owner, epoch): the owner is the worker's id and the epoch the execution's
`run_count`, bumped by every claim. A run's writes commit only while both still match, so a
worker that was declared dead, or whose execution was cancelled, can never write again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache, cached_property
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Now

from engine.models import Execution, ExecutionQuerySet, ExecutionStatus
from engine.writes import serialized

# Per transaction: PostgreSQL acknowledges the commit before its WAL reaches the disk.
ASYNCHRONOUS_COMMIT = "SET LOCAL synchronous_commit = off"


class Abandon(BaseException):
    """This run no longer owns the execution (cancelled, ended, or handed to another worker)."""


class EngineUnavailable(BaseException):
    """An engine write failed (database locked, deadlock, connection lost): the run stops
    without changing any state, and the execution is released to run again."""


class Release(BaseException):
    """The worker is stopping: hand the execution over at this step boundary."""


class Suspend(BaseException):
    """End this run; the execution runs again at `wake_at` (a sleep, a retry back-off, a
    wait's timeout), or when what it waits for happens (`wake_at` None: only that).

    A BaseException, so that a handler's `except Exception` cannot swallow it. `ready`, if
    given, is asked in the suspending transaction whether the wait is over already (an event
    sent, the last child ended, while this run was ending): then it runs again at once.
    """

    def __init__(self, wake_at: datetime | None, ready: Callable[[], bool] | None = None) -> None:
        super().__init__(wake_at)
        self.wake_at = wake_at
        self.ready = ready


@dataclass(frozen=True, kw_only=True)
class Claim:
    execution_id: uuid.UUID
    owner: str
    epoch: int

    @classmethod
    def of(cls, execution: Execution) -> Claim:
        return cls(
            execution_id=execution.id, owner=execution.owner or "", epoch=execution.run_count
        )

    @cached_property
    def owned(self) -> ExecutionQuerySet:
        """The execution while this claim holds it; built once, as writes are the hot path."""
        return Execution.objects.running().filter(
            id=self.execution_id, owner=self.owner, run_count=self.epoch
        )

    @property
    def _fence_sql(self) -> tuple[str, tuple[Any, ...]]:
        """The fence check, in plain SQL: it runs in every one of a step's transactions."""
        execution_id = Execution._meta.pk.get_db_prep_value(self.execution_id, connection)
        return _fence_query(), (execution_id, ExecutionStatus.RUNNING.value, self.owner, self.epoch)

    def write(self, **fields: object) -> bool:
        """One fenced UPDATE of the execution; False once this claim no longer owns it."""
        from engine import workers

        workers.current().check_can_commit()
        try:
            with serialized():
                return self.owned.update(**fields) == 1
        except DatabaseError as error:
            raise EngineUnavailable(f"{type(error).__name__}: {error}") from error

    @contextmanager
    def hold(self, *, durable: bool = True) -> Iterator[None]:
        """A transaction that commits only while this claim still owns a running execution.

        The fence check locks the row first (PostgreSQL; SQLite's IMMEDIATE transaction holds
        the database lock already), so a cancel either lands before it (we abandon) or waits.
        Not `durable`: PostgreSQL commits without waiting for its disk (a record that a crash
        of the database server may lose, and that nothing relies on having survived).
        """
        from engine import workers

        workers.current().check_can_commit()
        try:
            with serialized(), transaction.atomic(), connection.cursor() as cursor:
                if not durable and connection.vendor == "postgresql":
                    cursor.execute(ASYNCHRONOUS_COMMIT)
                cursor.execute(*self._fence_sql)
                if cursor.fetchone() is None:
                    raise Abandon()
                yield
        except DatabaseError as error:
            raise EngineUnavailable(f"{type(error).__name__}: {error}") from error


@cache
def _fence_query() -> str:
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    return (
        "SELECT 1 FROM engine_execution WHERE id = %s AND status = %s AND owner = %s "
        f"AND run_count = %s{lock}"
    )


def claim(execution_id: uuid.UUID, owner: str, now: datetime | None = None) -> Execution | None:
    """Take the execution if it is running, due and held by no worker: one UPDATE, then the
    execution as claimed. Due means by the database's clock, unless `now` is given (tests)."""
    due_by = Now() if now is None else now
    try:
        with serialized():
            taken = (
                Execution.objects.due(due_by)
                .filter(id=execution_id)
                .update(
                    owner=owner,
                    run_count=F("run_count") + 1,
                    started_at=Coalesce(F("started_at"), Value(now) if now else Now()),
                )
            )
        # Read back for the epoch; None if this worker was declared dead and released it again.
        return Execution.objects.filter(id=execution_id, owner=owner).first() if taken else None
    except DatabaseError as error:
        raise EngineUnavailable(f"{type(error).__name__}: {error}") from error
