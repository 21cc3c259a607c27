"""Child executions: started by a parent's invoke step, and waking it when the last one ends."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import partial

from django.db import transaction
from django.db.models.functions import Now

from engine import clock, concurrency, registry
from engine.config import BindingConfig
from engine.models import Execution, Step


def wake_parent(child: Execution, *, completed: bool = True) -> None:
    """The parent's wait is over once the last child of its step has ended, or at once when
    one did not complete (failed, cancelled)."""
    if child.parent_id is None:
        return
    parents = Execution.objects.running().filter(id=child.parent_id)
    if not list(parents.select_for_update().values_list("id", flat=True)):
        return  # the parent ended; locked otherwise, so two last children cannot both miss
    siblings = Execution.objects.running().filter(
        parent_id=child.parent_id, parent_step=child.parent_step
    )
    if completed and siblings.exclude(id=child.id).exists():
        return
    woken = parents.update(wake_at=Now())
    if woken and not parents.filter(owner__isnull=False).exists():
        transaction.on_commit(partial(_enqueue, [child.parent_id]))


def start_children(step: Step, binding: str, inputs: list[object]) -> list[uuid.UUID]:
    """The children of an invoke step, in the step's own transaction: started exactly once."""
    config = registry.current().config.binding(binding)
    now = clock.now()
    fingerprint = registry.current().fingerprint(config.name)
    children = [
        Execution(
            binding=config.binding,
            workflow=config.name,
            input=input,
            idempotency_key=f"child:{step.execution_id}:{_short_hash(step.name)}:{index}",
            parent_id=step.execution_id,
            parent_step=step.name,
            parent_index=index,
            created_at=now,
            code_fingerprint=fingerprint,
            **_state(config, input, now),
        )
        for index, input in enumerate(inputs)
    ]
    Execution.objects.bulk_create(children, batch_size=500)
    ids = [child.id for child in children]
    if config.concurrency:
        # They wait for slots; the admitted ones are queued by `admit`.
        groups = {(config.binding, child.concurrency_key) for child in children}
        concurrency.fill(groups, registry.current().config)
    else:
        transaction.on_commit(partial(_enqueue, ids))
    return ids


def _state(binding: BindingConfig, input: object, now: datetime) -> dict[str, object]:
    if binding.concurrency:
        return concurrency.waiting_fields(binding, input, now)
    return {"wake_at": now}


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _enqueue(execution_ids: Sequence[uuid.UUID | None]) -> None:
    from engine.runtime import enqueue

    for execution_id in execution_ids:
        if execution_id is not None:
            enqueue(execution_id)
