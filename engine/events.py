"""Events sent to an execution: stored rows, kept until a wait for their type consumes them."""

from __future__ import annotations

from functools import partial

from django.db import transaction
from django.db.models.functions import Now

from engine import clock
from engine.errors import ExecutionAlreadyFinished, ExecutionNotFound, PloyError
from engine.models import Event, Execution, Step, StepStatus
from engine.payloads import to_json
from engine.queries import parse_execution_id
from engine.writes import serialized

MAX_TYPE_LENGTH = 200


class InvalidEvent(PloyError):
    """An event without a usable type; the message names the fix."""


def send_event(execution_id: object, event_type: object, payload: object = None) -> str:
    """Store the event; an execution waiting for its type is made due and queued now."""
    from engine.runtime import enqueue

    if not isinstance(event_type, str) or not event_type.strip():
        raise InvalidEvent(f"an event needs a type: a non-empty string, got {event_type!r}")
    if len(event_type) > MAX_TYPE_LENGTH or "\x00" in event_type:
        raise InvalidEvent(
            f"an event type is at most {MAX_TYPE_LENGTH} characters, without NUL: "
            "use a short name like 'approval'"
        )
    payload = to_json(payload, "the event's payload")
    execution_uuid = parse_execution_id(execution_id)
    with serialized(), transaction.atomic():
        # Locks the execution: a run suspending meanwhile sees this event when it re-checks.
        execution = Execution.objects.select_for_update().filter(id=execution_uuid).first()
        if execution is None:
            raise ExecutionNotFound(execution_id)
        if execution.is_finished:
            raise ExecutionAlreadyFinished(execution.id, execution.status)
        event = Event.objects.create(
            execution=execution, type=event_type, payload=payload, created_at=clock.now()
        )
        waiting = Step.objects.filter(
            execution=execution, status=StepStatus.WAITING, event_type=event_type
        ).exists()
        if waiting and execution.owner is None:
            Execution.objects.running().filter(id=execution.id).update(wake_at=Now())
            transaction.on_commit(partial(enqueue, execution.id))
    return str(event.id)
