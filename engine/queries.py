"""Reads of executions: one execution with its steps and attempts, and keyset-paged lists."""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass

from django.db.models import Prefetch, QuerySet

from engine.errors import ExecutionNotFound
from engine.models import Attempt, Execution, ExecutionStatus, Step

MAX_PAGE_SIZE = 200
CURSOR = re.compile(r"[A-Za-z0-9_-]{22}")
HEX_ID = re.compile(r"[0-9a-f]{1,32}")


class InvalidQuery(ValueError):
    """A list filter or cursor that cannot be used; the message names it and the fix."""


@dataclass(frozen=True, kw_only=True)
class Page:
    items: list[Execution]
    next_cursor: str | None


def parse_execution_id(value: object) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise ExecutionNotFound(value) from None


def id_prefix_range(text: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """Every id starting with `text` (dashes and case ignored), as a range on the key, so any
    prefix is an index seek; None when `text` cannot start an id."""
    digits = text.strip().lower().replace("-", "")
    if not HEX_ID.fullmatch(digits):
        return None
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


def get_execution(execution_id: object, *, workflow: str | None = None) -> Execution:
    """The execution with its steps and their attempts, in three queries whatever their number."""
    executions = Execution.objects.prefetch_related(
        Prefetch(
            "steps",
            queryset=Step.objects.order_by("position").prefetch_related(
                Prefetch("attempts", queryset=Attempt.objects.order_by("number"))
            ),
        )
    )
    if workflow is not None:
        executions = executions.filter(workflow=workflow)
    try:
        execution: Execution = executions.get(id=parse_execution_id(execution_id))
        return execution
    except Execution.DoesNotExist:
        raise ExecutionNotFound(execution_id) from None


def list_executions(
    *,
    workflow: str | None = None,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    parent_id: str | None = None,
) -> Page:
    """Newest first, keyset-paged on the time-ordered id: no OFFSET and no COUNT(*)."""
    executions = filter_executions(Execution.objects.order_by("-id"), workflow, status)
    if parent_id:
        try:
            executions = executions.filter(parent_id=parse_execution_id(parent_id))
        except ExecutionNotFound:
            executions = executions.none()  # an id that names no execution has no children
    return keyset_page(executions, limit=limit, cursor=cursor)


def filter_executions(
    executions: QuerySet[Execution], workflow: str | None, status: str | None
) -> QuerySet[Execution]:
    if workflow:
        executions = executions.filter(workflow=workflow)
    if status:
        if status not in ExecutionStatus.values:
            raise InvalidQuery(
                f"status must be one of {', '.join(ExecutionStatus.values)}, got {status!r}"
            )
        executions = executions.filter(status=status)
    return executions


def keyset_page(executions: QuerySet[Execution], *, limit: int, cursor: str | None) -> Page:
    """One page of `executions` (ordered by -id) after `cursor`, and the cursor of the next."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidQuery(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    if cursor:
        executions = executions.filter(id__lt=decode_cursor(cursor))
    items = list(executions[: limit + 1])
    next_cursor = encode_cursor(items[limit - 1].id) if len(items) > limit else None
    return Page(items=items[:limit], next_cursor=next_cursor)


def encode_cursor(execution_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(execution_id.bytes).decode().rstrip("=")


def decode_cursor(cursor: str) -> uuid.UUID:
    try:
        if not CURSOR.fullmatch(cursor):
            raise ValueError(cursor)
        return uuid.UUID(bytes=base64.urlsafe_b64decode(cursor + "=="))
    except (ValueError, binascii.Error):
        raise InvalidQuery(
            f"cursor {cursor!r} is not valid: pass the nextCursor of a previous page"
        ) from None


# An execution's steps page by position (keyset): the cursor is the last position listed.
MAX_STEP_PAGE_SIZE = 200
STEP_CURSOR = re.compile(r"[0-9]{1,9}")


def check_step_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_STEP_PAGE_SIZE:
        raise InvalidQuery(f"limit must be between 1 and {MAX_STEP_PAGE_SIZE}, got {limit}")


def encode_step_cursor(position: int) -> str:
    return str(position)


def decode_step_cursor(cursor: str) -> int:
    if not STEP_CURSOR.fullmatch(cursor):
        raise InvalidQuery(
            f"cursor {cursor[:40]!r} is not valid: pass the stepsNextCursor or nextCursor of a "
            "previous answer"
        )
    return int(cursor)
