"""Every change of an execution's state: trigger, run, suspend, finish, cancel, rerun, sweep."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import QuerySet

from engine import clock, concurrency, registry, wakeup, workers
from engine.children import wake_parent
from engine.claims import Abandon, Claim, EngineUnavailable, Release, Suspend, claim
from engine.config import BindingConfig
from engine.context import StepContext
from engine.errors import (
    ExecutionAlreadyFinished,
    ExecutionNotFound,
    RecordedFailure,
    Timeout,
    UnknownWorkflow,
)
from engine.execution_rows import insert_execution
from engine.models import (
    Attempt,
    AttemptStatus,
    Execution,
    ExecutionQuerySet,
    ExecutionStatus,
    SlotStatus,
    Step,
    StepStatus,
)
from engine.payloads import error_details, to_json
from engine.queries import parse_execution_id
from engine.registry import WorkflowDefinition
from engine.reruns import KEEP_INPUT, Fork, plan_fork
from engine.schedule_config import SCHEDULED_WORKFLOW, scheduled_binding
from engine.writes import serialized

logger = logging.getLogger(__name__)

SWEEP_BATCH = 1000


@dataclass(frozen=True, kw_only=True)
class TriggerResult:
    execution_id: str
    created: bool
    # The new row itself, for a caller that runs it next in this process.
    execution: Execution | None = field(default=None, repr=False, compare=False)


def trigger(
    name: str,
    input: object = None,
    *,
    idempotency_key: str | None = None,
    rerun_of: Execution | None = None,
    run_here: bool = False,
    binding: BindingConfig | None = None,
    fork: Fork | None = None,
) -> TriggerResult:
    """Create a running execution and queue it once the transaction commits; or, `run_here`,
    create it already claimed by this process (run it next with `run_here()`). `binding` is
    given for an internal workflow (a tick of Ploy's `cron:` form), which `name` cannot name.
    A `fork`'s steps are copied into it in the same transaction."""
    binding = binding or registry.current().config.binding(name)
    input = to_json(input, "the workflow input")
    if idempotency_key:
        existing = _by_idempotency_key(binding.name, idempotency_key)
        if existing:
            return TriggerResult(execution_id=str(existing), created=False)
    now = clock.now()
    claimed = {"owner": workers.current().id, "run_count": 1, "started_at": now} if run_here else {}
    state = {"wake_at": now, **claimed}
    if binding.concurrency:
        state = concurrency.waiting_fields(binding, input, now)
    row = {
        "binding": binding.binding,
        "workflow": binding.name,
        "input": input,
        "idempotency_key": idempotency_key or None,
        "rerun_of_id": rerun_of.id if rerun_of else None,
        "from_step": fork.from_step if fork else "",
        "created_at": now,
        "code_fingerprint": registry.current().fingerprint(binding.name),
        **state,
    }
    try:
        execution, runnable = _create(row, binding, claimed, fork)
    except IntegrityError:
        # Another request with the same key won the race: answer with its execution.
        existing = _by_idempotency_key(binding.name, idempotency_key) if idempotency_key else None
        if not existing:
            raise
        return TriggerResult(execution_id=str(existing), created=False)
    if rerun_of is not None:
        execution.rerun_of = rerun_of
    return TriggerResult(
        execution_id=str(execution.id), created=True, execution=execution if runnable else None
    )


def _create(
    row: dict[str, Any], binding: BindingConfig, claimed: dict[str, Any], fork: Fork | None
) -> tuple[Execution, bool]:
    """The new row, queued once it commits unless it runs here; whether the caller may run it
    (an execution of a limited binding that must wait for a slot may not)."""
    if fork is None and not binding.concurrency and not connection.in_atomic_block:
        # One INSERT on its own commits by itself: no BEGIN, no COMMIT, no savepoint.
        with serialized():
            execution = insert_execution(**row)
        if not claimed:
            enqueue(execution.id)
        return execution, True
    with serialized(), transaction.atomic():
        execution = insert_execution(**row)
        if fork is not None:
            fork.copy_into(execution)
        if binding.concurrency:
            return execution, concurrency.admit_new(execution, binding, claimed) or not claimed
        if not claimed:
            transaction.on_commit(partial(enqueue, execution.id))
        return execution, True


def _by_idempotency_key(workflow: str, key: str) -> uuid.UUID | None:
    executions = Execution.objects.filter(workflow=workflow, idempotency_key=key)
    return executions.values_list("id", flat=True).first()


def rerun_execution(
    execution_id: object, *, from_step: str | None = None, input: object = KEEP_INPUT
) -> TriggerResult:
    """A new execution of the same workflow, with the same input unless `input` is given. With
    `from_step`, it reuses the stored outcomes of the steps before that step (their functions do
    not run) and runs that step and what follows."""
    return rerun(_get(execution_id), from_step=from_step, input=input)


def rerun(
    execution: Execution, *, from_step: str | None = None, input: object = KEEP_INPUT
) -> TriggerResult:
    config = registry.current().config
    known = {binding.binding for binding in config.workflows}
    name = execution.binding if execution.binding in known else execution.workflow
    internal = _internal_binding(execution)
    if internal is None:
        config.binding(name)  # a workflow no longer bound is refused before anything is read
    fork = plan_fork(execution, from_step) if from_step is not None else None
    new_input = execution.input if input is KEEP_INPUT else input
    return trigger(name, new_input, rerun_of=execution, binding=internal, fork=fork)


def cancel_execution(execution_id: object, *, now: datetime | None = None) -> Execution:
    """Cancelled at once with its running descendants, in one transaction; a worker running
    any of them stops at its next step boundary."""
    execution_uuid = parse_execution_id(execution_id)
    if not cancel_executions([execution_uuid], now=now):
        execution = _get(execution_uuid)
        # An execution whose failure is recorded is failing (its on_error hook runs or is
        # due): it ends as failed, never cancelled after the hook ran.
        status = ExecutionStatus.FAILED if execution.error is not None else execution.status
        raise ExecutionAlreadyFinished(execution.id, status)
    return _get(execution_uuid)


def cancel_executions(
    execution_ids: list[uuid.UUID], *, now: datetime | None = None
) -> list[uuid.UUID]:
    """Those of `execution_ids` that still run (and are not failing) cancelled, with their
    running descendants, in one transaction whatever their number; the ids it cancelled."""
    now = now or clock.now()
    with serialized(), transaction.atomic():
        levels = _running_descendants(execution_ids)
        # Child-first, the order in which a finishing child locks its row, then its parent's;
        # by id within a level, so that two cancels lock shared rows in the same order.
        for level in reversed(levels):
            _lock(_cancellable(level))
        cancelled = _lock(_cancellable(execution_ids))
        if not cancelled:
            return []
        descendants = list(
            _cancellable([each for level in levels for each in level]).values_list("id", flat=True)
        )
        ids = [*cancelled, *descendants]
        Execution.objects.filter(id__in=ids).update(
            status=ExecutionStatus.CANCELLED, finished_at=now, wake_at=None, owner=None
        )
        Step.objects.filter(
            execution_id__in=ids,
            status__in=[StepStatus.RUNNING, StepStatus.SLEEPING, StepStatus.WAITING],
        ).update(status=StepStatus.CANCELLED, finished_at=now, wake_at=None)
        Attempt.objects.filter(step__execution_id__in=ids, status=AttemptStatus.RUNNING).update(
            status=AttemptStatus.FAILED,
            error_type="Cancelled",
            error_message="the execution was cancelled while this attempt ran",
            finished_at=now,
        )
        # A cancelled child fails its parent's step (a parent cancelled here is past waking).
        for child in Execution.objects.filter(id__in=cancelled, parent_id__isnull=False).only(
            "id", "parent_id", "parent_step"
        ):
            wake_parent(child, completed=False)
        config = registry.current().config
        concurrency.fill(concurrency.held_groups(ids, config), config)  # slots go on
    # Children born meanwhile (a run in flight committed them before its fence saw the cancel).
    born = list(Execution.objects.running().filter(parent_id__in=ids).values_list("id", flat=True))
    if born:
        cancel_executions(born, now=now)
    return cancelled


def _lock(executions: QuerySet[Execution]) -> list[uuid.UUID]:
    return list(executions.order_by("id").select_for_update().values_list("id", flat=True))


def _cancellable(ids: list[uuid.UUID]) -> ExecutionQuerySet:
    return Execution.objects.running().filter(id__in=ids, error__isnull=True)


def _running_descendants(execution_ids: list[uuid.UUID]) -> list[list[uuid.UUID]]:
    """Their running children, their running children... one list per level."""
    levels, level = [], list(execution_ids)
    while level:
        level = list(
            Execution.objects.running().filter(parent_id__in=level).values_list("id", flat=True)
        )
        if level:
            levels.append(level)
    return levels


def _get(execution_id: object) -> Execution:
    try:
        return Execution.objects.get(id=parse_execution_id(execution_id))
    except Execution.DoesNotExist:
        raise ExecutionNotFound(execution_id) from None


def run_execution(execution_id: str, *, now: datetime | None = None) -> None:
    """What a queue message does: claim the execution, replay its handler, record the outcome.

    Any message may be late, lost or repeated; the claim decides whether this one runs it.
    """
    try:
        execution_uuid = parse_execution_id(execution_id)
    except ExecutionNotFound:
        logger.warning("ignoring a queue message for %r: not an execution id", execution_id)
        return
    worker = workers.current()
    if not worker.is_healthy:
        # Cut off from the database (no heartbeat): leave it to a worker that has one.
        enqueue(execution_uuid, at=clock.now() + timedelta(seconds=1))
        return
    with worker.claiming(execution_uuid):
        try:
            execution = claim(execution_uuid, worker.id, now)
        except EngineUnavailable as error:
            worker.release_if_claimed(execution_uuid)
            logger.warning(
                "execution %s: cannot claim it now (%s); it runs once the database answers",
                execution_id,
                error,
            )
            return
        if execution is not None:
            held = worker.hold(execution)
    if execution is None:
        _follow_up(execution_uuid)
        return
    _run_held(execution, held, worker, now)


def run_here(execution: Execution) -> None:
    """Run an execution that `trigger(..., run_here=True)` created owned by this process."""
    worker = workers.current()
    _run_held(execution, worker.hold(execution), worker, None)


def _run_held(
    execution: Execution, held: Claim, worker: workers.WorkerProcess, now: datetime | None
) -> None:
    """Run an execution this worker holds, and let go of it however the run ends."""
    try:
        _run_claimed(execution, held, (lambda: now) if now else clock.now)
    except (EngineUnavailable, DatabaseError) as error:
        logger.warning("execution %s: engine write failed (%s); it runs again", execution.id, error)
        worker.release_later(held)
    except Release:
        workers.release_claim(held)
        logger.info("execution %s: handed over, this worker is stopping", execution.id)
    finally:
        worker.forget(held)


def _follow_up(execution_id: uuid.UUID) -> None:
    """Not claimable now: a message that came early waits for the wake time again."""
    row = (
        Execution.objects.running()
        .unowned()
        .filter(id=execution_id, wake_at__isnull=False)
        .values_list("wake_at", flat=True)
        .first()
    )
    if row is not None:
        enqueue(execution_id, at=row)


def _run_claimed(execution: Execution, held: Claim, now: Callable[[], datetime]) -> None:
    current = registry.current()
    try:
        definition = current.definition(execution.workflow)
    except UnknownWorkflow as error:
        _fail(execution, held, now, error, None)
        return
    if execution.error is not None:
        # The failure was decided, but the worker died before on_error ran: run it now.
        _fail(execution, held, now, RecordedFailure(execution.error), definition)
        return
    binding = _binding_of(current, execution)
    deadline = None
    if binding.timeout is not None:
        deadline = execution.created_at + timedelta(seconds=binding.timeout)
        if now() >= deadline:
            _fail(execution, held, now, Timeout(binding.binding, binding.timeout), definition)
            return
    if execution.slot == SlotStatus.WAITING:
        # Due for its timeout, claimed a moment early (or admitted meanwhile): not yet.
        if held.write(owner=None):
            _follow_up(execution.id)
        return
    context = StepContext(
        execution=execution,
        # The first claim's run (epoch 1) is the first run of all: it has no steps to load,
        # unless it is a rerun from a step, created with the steps before that one.
        steps=[] if execution.run_count == 1 and not execution.from_step else _steps_of(execution),
        retries=binding.retries,
        claim=held,
        clock=now,
        deadline=deadline,
        on_deadline=lambda: Timeout(binding.binding, binding.timeout or 0),
    )
    arguments = {
        "input": execution.input,
        "env": _env(),
        "step": context,
        "execution_id": str(execution.id),
    }
    try:
        output = _outcome(definition, context, arguments)
    except Suspend as suspension:
        _suspend(execution, held, suspension, deadline)
    except Abandon:
        logger.info("execution %s: stopped, it was cancelled or handed over", execution.id)
    except Exception as error:
        _fail(execution, held, now, error, definition)
    else:
        _finish(execution, held, now(), ExecutionStatus.COMPLETED, output=output)


def _steps_of(execution: Execution) -> list[Step]:
    return list(Step.objects.filter(execution=execution).order_by("position"))


def _outcome(
    definition: WorkflowDefinition, context: StepContext, arguments: dict[str, Any]
) -> object:
    """The handler's JSON result; an engine signal it swallowed (a bare `except:` around a
    sleep, a `finally` that called another step) wins over whatever it did afterwards."""
    try:
        result = definition.handler(**{name: arguments[name] for name in definition.arguments})
    except Exception:
        context.reraise_latched()
        raise
    context.reraise_latched()
    return to_json(result, "the workflow's return value")


def _binding_of(current: registry.Registry, execution: Execution) -> BindingConfig:
    try:
        return current.config.binding(execution.binding)
    except UnknownWorkflow:
        return _internal_binding(execution) or current.config.binding(execution.workflow)


def _internal_binding(execution: Execution) -> BindingConfig | None:
    """The binding of a tick of Ploy's `cron:` form, which ploy.yaml's workflow: does not list."""
    bindings = {binding.binding for binding in registry.current().config.workflows}
    if execution.workflow == SCHEDULED_WORKFLOW and execution.binding not in bindings:
        return scheduled_binding(execution.binding)
    return None


def _env() -> object:
    from engine.bindings import current_env

    return current_env()


def _suspend(
    execution: Execution, held: Claim, suspension: Suspend, deadline: datetime | None = None
) -> None:
    """Release it until its wake time (its timeout at the latest); a wait that is over
    meanwhile makes it due at once."""
    wake_at = suspension.wake_at
    if deadline is not None and (wake_at is None or wake_at > deadline):
        wake_at = deadline
    try:
        with held.hold():
            if suspension.ready is not None and suspension.ready():
                wake_at = clock.now()
            held.owned.update(wake_at=wake_at, owner=None)
    except Abandon:
        return
    if wake_at is not None:
        enqueue(execution.id, at=wake_at)


def _fail(
    execution: Execution,
    held: Claim,
    now: Callable[[], datetime],
    error: Exception,
    definition: WorkflowDefinition | None,
) -> None:
    """Record the failure, run on_error, then mark it failed: a worker that dies in between
    leaves the failure recorded and the hook pending, and the next run runs the hook."""
    details = error.details if isinstance(error, RecordedFailure) else error_details(error)
    if not held.write(error=details):
        return  # cancelled or handed over meanwhile
    if definition is not None and definition.on_error is not None:
        offered = {"env": _env(), "input": execution.input, "execution_id": str(execution.id)}
        arguments = {name: offered[name] for name in definition.on_error_arguments}
        try:
            definition.on_error(error, **arguments)
        except Exception as hook_error:  # the user's hook: recorded and ignored
            logger.warning("execution %s: on_error raised %r", execution.id, hook_error)
            details = {**details, "onError": error_details(hook_error)}
    _finish(execution, held, now(), ExecutionStatus.FAILED, error=details)


def _finish(
    execution: Execution,
    held: Claim,
    now: datetime,
    status: ExecutionStatus,
    *,
    output: object = None,
    error: dict[str, Any] | None = None,
) -> None:
    # Fenced on the claim: a worker that lost it can never overwrite a cancel.
    fields = {"status": status, "output": output, "error": error, "finished_at": now}
    fields |= {"wake_at": None, "owner": None}
    if execution.parent_id is None and not execution.slot:
        finished = held.write(**fields)
    else:
        try:
            # Its parent learns of it, and its slot goes on, in the same transaction.
            with held.hold():
                finished = held.owned.update(**fields) == 1
                if execution.parent_id is not None:
                    wake_parent(execution, completed=status == ExecutionStatus.COMPLETED)
                if execution.slot:
                    group = (execution.binding, execution.concurrency_key)
                    concurrency.fill([group], registry.current().config)
        except Abandon:
            finished = False
    if finished:
        logger.info("execution %s: %s", execution.id, status)


def enqueue(execution_id: uuid.UUID, *, at: datetime | None = None, priority: int = 0) -> None:
    """Tell the workers to look at the execution (at `at`, a database time). A lost message
    only delays it: the leader's sweep finds what no message covers."""
    from engine.tasks import run_execution_task

    try:
        if at is not None and at > clock.now():
            run_execution_task.schedule(args=(str(execution_id),), eta=clock.to_host(at))
        else:
            run_execution_task(str(execution_id), priority=priority or None)
            wakeup.nudge()
    except Exception:  # any queue backend's error; the database still holds the execution
        logger.exception("execution %s: could not queue it; the sweep will", execution_id)


def sweep(*, now: datetime | None = None, grace: timedelta | None = None) -> int:
    """Re-queue running executions that no worker holds, in case their message was lost: those
    overdue by the grace at once, those due before the next sweep at their wake time, and
    those due this moment (whose message may be on its way) once they are overdue by the
    grace, not a whole sweep later."""
    now = now or clock.now()
    grace = timedelta(seconds=settings.PLOY_SWEEP_GRACE_SECONDS) if grace is None else grace
    overdue_since = now - grace
    unowned = Execution.objects.running().unowned().order_by("wake_at")
    overdue = list(
        unowned.filter(wake_at__lte=overdue_since).values_list("id", flat=True)[:SWEEP_BATCH]
    )
    soon = unowned.filter(
        wake_at__gt=overdue_since,
        wake_at__lte=now + timedelta(seconds=settings.PLOY_SWEEP_SECONDS),
    )
    for execution_id in overdue:
        enqueue(execution_id)
    for execution_id, wake_at in soon.values_list("id", "wake_at")[:SWEEP_BATCH]:
        assert wake_at is not None  # the filter's
        enqueue(execution_id, at=wake_at if wake_at > now else wake_at + grace)
    admitted = concurrency.repair(registry.current().config, batch=SWEEP_BATCH)
    if admitted:
        logger.info("sweep: handed on %d concurrency slot(s) no ending had", admitted)
    if overdue:
        logger.info("sweep: re-queued %d overdue execution(s)", len(overdue))
    return len(overdue)
