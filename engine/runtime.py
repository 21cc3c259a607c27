"""Every change of an execution's state: trigger, run, suspend, finish, cancel, rerun, sweep."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from engine import registry
from engine.context import StepContext, Suspend
from engine.errors import ExecutionAlreadyFinished, ExecutionNotFound, UnknownWorkflow
from engine.lease import Abandon, Heartbeat, Lease, claim
from engine.models import (
    Attempt,
    AttemptStatus,
    Execution,
    ExecutionStatus,
    Step,
    StepStatus,
)
from engine.payloads import error_details, to_json
from engine.queries import parse_execution_id
from engine.registry import WorkflowDefinition

logger = logging.getLogger(__name__)

# A watchdog message fires this long after a lease's expiry, to take over from a dead worker.
WATCHDOG_MARGIN = timedelta(milliseconds=250)
SWEEP_BATCH = 1000
# The sweep runs every minute (Huey's periodic granularity) and at each worker's start.
SWEEP_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True, kw_only=True)
class TriggerResult:
    execution_id: str
    created: bool


def trigger(
    name: str,
    input: object = None,
    *,
    idempotency_key: str | None = None,
    rerun_of: Execution | None = None,
) -> TriggerResult:
    """Create a running execution and queue it once the transaction commits."""
    binding = registry.current().config.binding(name)
    input = to_json(input, "the workflow input")
    if idempotency_key:
        existing = _by_idempotency_key(binding.name, idempotency_key)
        if existing:
            return TriggerResult(execution_id=str(existing), created=False)
    now = timezone.now()
    try:
        with transaction.atomic():
            execution = Execution.objects.create(
                binding=binding.binding,
                workflow=binding.name,
                input=input,
                idempotency_key=idempotency_key or None,
                rerun_of=rerun_of,
                created_at=now,
                wake_at=now,
            )
            transaction.on_commit(partial(enqueue, execution.id))
    except IntegrityError:
        # Another request with the same key won the race: answer with its execution.
        existing = idempotency_key and _by_idempotency_key(binding.name, idempotency_key)
        if not existing:
            raise
        return TriggerResult(execution_id=str(existing), created=False)
    return TriggerResult(execution_id=str(execution.id), created=True)


def _by_idempotency_key(workflow: str, key: str) -> uuid.UUID | None:
    executions = Execution.objects.filter(workflow=workflow, idempotency_key=key)
    return executions.values_list("id", flat=True).first()


def rerun_execution(execution_id: object) -> TriggerResult:
    """A new execution of the same workflow with the same input."""
    execution = _get(execution_id)
    config = registry.current().config
    known = {binding.binding for binding in config.workflows}
    name = execution.binding if execution.binding in known else execution.workflow
    return trigger(name, execution.input, rerun_of=execution)


def cancel_execution(execution_id: object, *, now: datetime | None = None) -> Execution:
    """Cancelled at once; a worker running it stops at its next step boundary."""
    execution_uuid = parse_execution_id(execution_id)
    now = now or timezone.now()
    with transaction.atomic():
        cancelled = (
            Execution.objects.running()
            .filter(id=execution_uuid)
            .update(
                status=ExecutionStatus.CANCELLED,
                finished_at=now,
                wake_at=None,
                lease_owner=None,
                lease_expires_at=None,
            )
        )
        if not cancelled:
            execution = _get(execution_uuid)
            raise ExecutionAlreadyFinished(execution.id, execution.status)
        Step.objects.filter(
            execution_id=execution_uuid, status__in=[StepStatus.RUNNING, StepStatus.SLEEPING]
        ).update(status=StepStatus.CANCELLED, finished_at=now, wake_at=None)
        Attempt.objects.filter(
            step__execution_id=execution_uuid, status=AttemptStatus.RUNNING
        ).update(
            status=AttemptStatus.FAILED,
            error_type="Cancelled",
            error_message="the execution was cancelled while this attempt ran",
            finished_at=now,
        )
    return _get(execution_uuid)


def _get(execution_id: object) -> Execution:
    try:
        return Execution.objects.get(id=parse_execution_id(execution_id))
    except Execution.DoesNotExist:
        raise ExecutionNotFound(execution_id) from None


def run_execution(
    execution_id: str, *, watched_owner: str | None = None, now: datetime | None = None
) -> None:
    """What a queue message does: claim the execution, replay its handler, record the outcome.

    Any message may be late, lost or repeated; the claim decides whether this one runs it.
    """
    clock: Callable[[], datetime] = (lambda: now) if now else timezone.now
    try:
        execution_uuid = parse_execution_id(execution_id)
    except ExecutionNotFound:
        logger.warning("ignoring a queue message for %r: not an execution id", execution_id)
        return
    lease = claim(execution_uuid, clock())
    if lease is None:
        _follow_up(execution_uuid, watched_owner, clock())
        return
    # If this worker dies, the watchdog message finds the expired lease and takes over.
    enqueue(
        execution_uuid,
        at=lease.expiry(clock()) + WATCHDOG_MARGIN,
        watched_owner=lease.owner,
    )
    execution = Execution.objects.get(id=execution_uuid)
    with Heartbeat(lease):
        _run_claimed(execution, lease, clock)


def _follow_up(execution_id: uuid.UUID, watched_owner: str | None, now: datetime) -> None:
    """Not claimable now: keep watching a live lease, or wait for a wake time not yet reached."""
    row = (
        Execution.objects.running()
        .filter(id=execution_id)
        .values("wake_at", "lease_owner", "lease_expires_at")
        .first()
    )
    if row is None:
        return
    if row["lease_expires_at"] and row["lease_expires_at"] > now:
        if watched_owner and row["lease_owner"] == watched_owner:
            enqueue(
                execution_id,
                at=row["lease_expires_at"] + WATCHDOG_MARGIN,
                watched_owner=watched_owner,
            )
    elif row["wake_at"] and row["wake_at"] > now and watched_owner is None:
        enqueue(execution_id, at=row["wake_at"])


def _run_claimed(execution: Execution, lease: Lease, clock: Callable[[], datetime]) -> None:
    if execution.error is not None:
        # An earlier run decided the failure (and ran on_error) but died before recording it.
        _finish(execution, lease, clock(), ExecutionStatus.FAILED, error=execution.error)
        return
    current = registry.current()
    try:
        definition = current.definition(execution.workflow)
    except UnknownWorkflow as error:
        _fail(execution, lease, clock, error, None)
        return
    context = StepContext(
        execution=execution,
        steps=list(Step.objects.filter(execution=execution).order_by("position")),
        retries=_retries_of(current, execution),
        lease=lease,
        clock=clock,
    )
    arguments = {
        "input": execution.input,
        "env": _env(),
        "step": context,
        "execution_id": str(execution.id),
    }
    try:
        result = definition.handler(**{name: arguments[name] for name in definition.arguments})
        output = to_json(result, "the workflow's return value")
    except Suspend as suspension:
        _suspend(execution, lease, clock(), suspension.wake_at)
    except Abandon:
        logger.info("execution %s: stopped, it was cancelled or taken over", execution.id)
    except Exception as error:
        _fail(execution, lease, clock, error, definition)
    else:
        _finish(execution, lease, clock(), ExecutionStatus.COMPLETED, output=output)


def _retries_of(current: registry.Registry, execution: Execution) -> int:
    try:
        return current.config.binding(execution.binding).retries
    except UnknownWorkflow:
        return current.config.binding(execution.workflow).retries


def _env() -> object:
    from engine.bindings import current_env

    return current_env()


def _suspend(execution: Execution, lease: Lease, now: datetime, wake_at: datetime) -> None:
    if lease.owned.update(wake_at=wake_at, lease_owner=None, lease_expires_at=None):
        enqueue(execution.id, at=wake_at)


def _fail(
    execution: Execution,
    lease: Lease,
    clock: Callable[[], datetime],
    error: Exception,
    definition: WorkflowDefinition | None,
) -> None:
    """Record the failure first, so on_error runs at most once even if this worker dies."""
    details = error_details(error)
    if not lease.owned.update(error=details, lease_expires_at=lease.expiry(clock())):
        return  # cancelled or taken over meanwhile
    if definition is not None and definition.on_error is not None:
        offered = {"env": _env(), "input": execution.input, "execution_id": str(execution.id)}
        arguments = {name: offered[name] for name in definition.on_error_arguments}
        try:
            definition.on_error(error, **arguments)
        except Exception as hook_error:  # the user's hook: recorded and ignored
            logger.warning("execution %s: on_error raised %r", execution.id, hook_error)
            details = {**details, "onError": error_details(hook_error)}
    _finish(execution, lease, clock(), ExecutionStatus.FAILED, error=details)


def _finish(
    execution: Execution,
    lease: Lease,
    now: datetime,
    status: ExecutionStatus,
    *,
    output: object = None,
    error: dict | None = None,
) -> None:
    # Conditional on the lease: a worker that lost it can never overwrite a cancel.
    finished = lease.owned.update(
        status=status,
        output=output,
        error=error,
        finished_at=now,
        wake_at=None,
        lease_owner=None,
        lease_expires_at=None,
    )
    if finished:
        logger.info("execution %s: %s", execution.id, status)


def enqueue(
    execution_id: uuid.UUID, *, at: datetime | None = None, watched_owner: str | None = None
) -> None:
    """Tell the workers to look at the execution (at `at`). A lost message only delays it."""
    from engine.tasks import run_execution_task

    args = (str(execution_id), watched_owner)
    try:
        if at is not None and at > timezone.now():
            run_execution_task.schedule(args=args, eta=at)
        else:
            run_execution_task(*args)
    except Exception:  # any queue backend's error; the database still holds the execution
        logger.exception("execution %s: could not queue it; the sweep will", execution_id)


def sweep(*, now: datetime | None = None) -> int:
    """Re-queue running executions that no live worker holds: those overdue at once, and
    those due before the next sweep at their wake time, in case their message was lost."""
    now = now or timezone.now()
    overdue_since = now - timedelta(seconds=settings.PLOY_SWEEP_GRACE_SECONDS)
    unleased = Execution.objects.running().unleased(now).order_by("wake_at")
    overdue = list(
        unleased.filter(wake_at__lte=overdue_since).values_list("id", flat=True)[:SWEEP_BATCH]
    )
    soon = unleased.filter(wake_at__gt=now, wake_at__lte=now + SWEEP_INTERVAL)
    for execution_id in overdue:
        enqueue(execution_id)
    for execution_id, wake_at in soon.values_list("id", "wake_at")[:SWEEP_BATCH]:
        enqueue(execution_id, at=wake_at)
    if overdue:
        logger.info("sweep: re-queued %d overdue execution(s)", len(overdue))
    return len(overdue)
