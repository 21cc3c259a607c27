"""Cancel or rerun every execution a filter matches, in batches of bounded transactions.

Each batch is one keyset page of ids over the primary key, newest first, from where the last
batch stopped: a batch reads an index range, never the whole table, and holds the database for
one short transaction, so a million matches go by without locking anything for long.
Executions created meanwhile (the reruns among them) are newer than the first batch, so they
are never visited.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from engine import runtime
from engine.errors import PloyError
from engine.models import Execution
from engine.writes import serialized

logger = logging.getLogger(__name__)

BATCH_SIZE = 500


def cancel_matching(executions: QuerySet[Execution], *, batch_size: int = BATCH_SIZE) -> int:
    """Cancel those that run (with their running descendants), a batch per transaction; how
    many of them it cancelled. Ended ones, and failing ones whose on_error is due, are left."""
    cancellable = cancellable_among(executions)
    count = 0
    for batch in _batches(cancellable.values_list("id", flat=True), batch_size):
        count += len(runtime.cancel_executions(batch))
    return count


def rerun_matching(executions: QuerySet[Execution], *, batch_size: int = BATCH_SIZE) -> int:
    """A new execution of each, with the same input, a batch per transaction; how many started.
    One whose workflow is no longer in ploy.yaml is left out."""
    rows = executions.only("id", "binding", "workflow", "input")
    count = 0
    for batch in _batches(rows, batch_size):
        with serialized(), transaction.atomic():
            count += sum(_rerun(execution) for execution in batch)
    return count


def cancellable_among(executions: QuerySet[Execution]) -> QuerySet[Execution]:
    return executions.filter(status="running", error__isnull=True)


def _rerun(execution: Execution) -> bool:
    try:
        runtime.rerun(execution)
    except PloyError as error:  # its workflow left ploy.yaml
        logger.warning("not rerun %s: %s", execution.id, error)
        return False
    return True


def _batches(rows: QuerySet[Any], size: int) -> Iterator[list[Any]]:
    """Keyset pages of `rows`, newest first by id; each a list of what `rows` yields."""
    rows = rows.order_by("-id")
    last: uuid.UUID | None = None
    while True:
        page = rows.filter(id__lt=last) if last is not None else rows
        batch = list(page[:size])
        if not batch:
            return
        yield batch
        last = batch[-1] if isinstance(batch[-1], uuid.UUID) else batch[-1].id
        if len(batch) < size:
            return
