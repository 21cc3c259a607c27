"""Concurrency limits per binding: at most N executions of a group hold a slot; the rest wait.

A slot is held from an execution's admission until it ends (sleeping and waiting included),
and counted per group: the binding and the value of its `concurrency_key` in the input. A
waiting execution is `running` with no wake time, so no worker claims it and no thread waits
for it. Every change that could free a slot (a holder ends, a waiter arrives, the sweep finds a
lost hand-off) calls `admit` in the same transaction: under the group's lock, the oldest
waiters take the free slots and are made due and queued, as any wake-up is.

The group's lock is a PostgreSQL transaction-level advisory lock (SQLite's IMMEDIATE
transactions serialise every writer already). It is always taken after the row locks of the
transaction (a finishing execution's own row, its parent's, a cancelled tree's), and a
waiter's row is taken with SKIP LOCKED, so no transaction waits for a row while it holds a
group's lock: lockers of rows and of groups cannot deadlock.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from functools import partial

from django.db import connection, transaction
from django.db.models import Count
from django.db.models.functions import Now

from engine import clock
from engine.config import BindingConfig, PloyConfig
from engine.models import Execution, SlotStatus
from engine.writes import serialized

# A key value longer than this (as JSON text) is stored as its hash: the column's width.
MAX_KEY_TEXT = 200


def group_key(binding: BindingConfig, input: object) -> str:
    """The group an input counts in: the JSON text of the value at the key path ("null" when
    the path is missing, so every input without it shares one group); "" without a key."""
    if binding.concurrency_key is None:
        return ""
    value = input
    for part in binding.concurrency_key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(text) > MAX_KEY_TEXT:
        return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"
    return text


def waiting_fields(
    binding: BindingConfig, input: object, created_at: datetime
) -> dict[str, object]:
    """A new execution of a limited binding waits until `admit` gives it a slot; it is due
    only at its timeout, if it has one, to fail then without having run."""
    timeout_at = None
    if binding.timeout is not None:
        timeout_at = created_at + timedelta(seconds=binding.timeout)
    return {
        "slot": SlotStatus.WAITING,
        "concurrency_key": group_key(binding, input),
        "wake_at": timeout_at,
    }


def admit(
    binding: str, key: str, limit: int | None, *, keep: Collection[uuid.UUID] = ()
) -> list[uuid.UUID]:
    """Inside a transaction: give the group's free slots to its oldest waiters, make them due
    and queue them once it commits (except those in `keep`, which the caller runs itself).
    `limit` None: the binding has no limit any more (ploy.yaml changed), every waiter goes."""
    _lock_group(binding, key)
    group = Execution.objects.running().filter(binding=binding, concurrency_key=key)
    if limit is None:
        free = None
    else:
        free = limit - group.filter(slot=SlotStatus.HOLDING).count()
        if free <= 0:
            return []
    waiters = (
        group.filter(slot=SlotStatus.WAITING).order_by("id").select_for_update(skip_locked=True)
    )
    ids = list(waiters.values_list("id", flat=True)[:free])
    if ids:
        Execution.objects.filter(id__in=ids).update(slot=SlotStatus.HOLDING, wake_at=Now())
        queued = [each for each in ids if each not in keep]
        transaction.on_commit(partial(_enqueue_all, queued))
    return ids


def admit_new(execution: Execution, binding: BindingConfig, claimed: dict[str, object]) -> bool:
    """A new execution of a limited binding takes a free slot, unless older ones wait for it;
    whether it did. Run here (`claimed`), it is claimed at once when admitted, and left to a
    worker when it waits (`.run()` returns it waiting, as after a sleep)."""
    keep = {execution.id} if claimed else set()
    key, limit = execution.concurrency_key, binding.concurrency
    if execution.id not in admit(binding.binding, key, limit, keep=keep):
        return False
    execution.slot, execution.wake_at = SlotStatus.HOLDING, clock.now()
    if claimed:
        Execution.objects.filter(id=execution.id).update(**claimed)
        for name, value in claimed.items():
            setattr(execution, name, value)
    return True


def fill(groups: Iterable[tuple[str, str]], config: PloyConfig) -> None:
    """Inside the transaction that ended these (binding, key) groups' holders: hand their
    slots on. Groups are locked in one order, so two such transactions cannot deadlock."""
    for binding, key in sorted(set(groups)):
        admit(binding, key, limit_of(config, binding))


def held_groups(ids: list[uuid.UUID], config: PloyConfig) -> list[tuple[str, str]]:
    """The groups of the slot holders among `ids`, read before they end, for `fill`."""
    if not any(binding.concurrency for binding in config.workflows):
        return []
    held = Execution.objects.filter(id__in=ids, slot=SlotStatus.HOLDING)
    return list(held.order_by().values_list("binding", "concurrency_key").distinct())


def limit_of(config: PloyConfig, binding: str) -> int | None:
    for each in config.workflows:
        if each.binding == binding:
            return each.concurrency
    return None


def repair(config: PloyConfig, *, batch: int) -> int:
    """The sweep's part: groups whose waiters were never handed a free slot (a hand-off lost
    with its process, a limit raised or removed in ploy.yaml); how many executions it admitted."""
    admitted = 0
    for binding, key in _starved_groups(config)[:batch]:
        with serialized(), transaction.atomic():
            admitted += len(admit(binding, key, limit_of(config, binding)))
    return admitted


def _starved_groups(config: PloyConfig) -> list[tuple[str, str]]:
    running = Execution.objects.running().order_by()
    waiting = set(
        running.filter(slot=SlotStatus.WAITING).values_list("binding", "concurrency_key").distinct()
    )
    if not waiting:
        return []
    counts = (
        running.filter(slot=SlotStatus.HOLDING, binding__in={binding for binding, _ in waiting})
        .values("binding", "concurrency_key")
        .annotate(count=Count("*"))
    )
    holders = {(row["binding"], row["concurrency_key"]): row["count"] for row in counts}
    starved = []
    for binding, key in sorted(waiting):
        limit = limit_of(config, binding)
        if limit is None or holders.get((binding, key), 0) < limit:
            starved.append((binding, key))
    return starved


def _lock_group(binding: str, key: str) -> None:
    if connection.vendor != "postgresql":
        return  # SQLite: this transaction holds the database's write lock already
    digest = hashlib.sha256(f"ploy-concurrency\0{binding}\0{key}".encode()).digest()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest[:8], "big", signed=True)]
        )


def _enqueue_all(execution_ids: list[uuid.UUID]) -> None:
    from engine.runtime import enqueue

    for execution_id in execution_ids:
        enqueue(execution_id)
