"""Executions, their steps and each step's attempts: the database is the source of truth."""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from uuid6 import uuid7


class ExecutionStatus(models.TextChoices):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(models.TextChoices):
    RUNNING = "running"
    SLEEPING = "sleeping"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptStatus(models.TextChoices):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class SlotStatus(models.TextChoices):
    """An execution of a binding with `concurrency`: waiting for a slot of its group, or
    holding one from its first run until it ends (sleeping and waiting included)."""

    NONE = "", "no limit"
    WAITING = "waiting"
    HOLDING = "holding"


FINISHED_STATUSES = (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED)


class ExecutionQuerySet(models.QuerySet["Execution"]):
    def running(self) -> ExecutionQuerySet:
        return self.filter(status=ExecutionStatus.RUNNING)

    def finished(self) -> ExecutionQuerySet:
        return self.filter(status__in=FINISHED_STATUSES)

    def unowned(self) -> ExecutionQuerySet:
        """No worker holds it: never claimed, released, or freed from a dead worker."""
        return self.filter(owner__isnull=True)

    def due(self, now: datetime | Now) -> ExecutionQuerySet:
        """Running, wanting a run by `now` (the database's clock by default), held by no worker."""
        return self.running().unowned().filter(wake_at__lte=now)


class Execution(models.Model):
    """One run of a workflow; `id` is a UUIDv7, so ordering by id is ordering by creation."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    binding = models.CharField(max_length=100)
    workflow = models.CharField(max_length=200)
    status = models.CharField(
        max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.RUNNING
    )
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns"
    )
    # A rerun from a step: the step of `rerun_of` it started from; the steps before it were
    # copied from there at creation (each with `reused_from`), so their functions never run.
    from_step = models.CharField(max_length=200, blank=True, default="")
    # A child started by a parent's `step.invoke` / `invoke_many`: which step, and its place
    # among that step's children (the order of the outputs).
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    parent_step = models.CharField(max_length=200, blank=True, default="")
    parent_index = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When the next run is due (now for a new execution, the wake time of a sleep or a retry);
    # null once it has ended. The sweep and the claim both read it.
    wake_at = models.DateTimeField(null=True, blank=True)
    # The claim: the live worker that runs it now. `run_count` is the claim's epoch: every
    # claim bumps it, and every write of a run is fenced on (owner, run_count).
    owner = models.CharField(max_length=200, null=True, blank=True)
    run_count = models.PositiveIntegerField(default=0)
    # A binding with `concurrency`: its slot, and the group it counts in (the value of the
    # binding's `concurrency_key` in the input, as JSON text; "" for the one group of all).
    slot = models.CharField(max_length=8, choices=SlotStatus.choices, blank=True, default="")
    concurrency_key = models.CharField(max_length=255, blank=True, default="")
    # A short hash of the workflow's code when the execution was created (engine.fingerprints);
    # null for executions older than the field.
    code_fingerprint = models.CharField(max_length=64, null=True, blank=True)

    objects = ExecutionQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["status", "-id"], name="execution_status_id"),
            models.Index(fields=["workflow", "-id"], name="execution_workflow_id"),
            models.Index(fields=["workflow", "status", "-id"], name="execution_workflow_status_id"),
            # The "last hour" and "last 24 hours" counts: a range count per (workflow,) status,
            # read from the index alone.
            models.Index(fields=["status", "created_at"], name="execution_status_created"),
            models.Index(
                fields=["workflow", "status", "created_at"], name="execution_workflow_created"
            ),
            # The admin's search by a whole idempotency key, whatever the workflow.
            models.Index(
                fields=["idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="execution_idempotency_key",
            ),
            models.Index(fields=["status", "wake_at"], name="execution_status_wake"),
            models.Index(fields=["owner"], name="execution_owner"),
            models.Index(fields=["parent", "parent_step", "status"], name="execution_parent"),
            # A group's holders (counted) and waiters (oldest first): running, limited ones only.
            models.Index(
                fields=["binding", "concurrency_key", "slot", "id"],
                condition=Q(status=ExecutionStatus.RUNNING) & ~Q(slot=""),
                name="execution_slot",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="execution_unique_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} {self.id}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES


class Step(models.Model):
    """A named step of an execution, or a `sleep:N`; keyed by name, listed in the order reached."""

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=200)
    position = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=StepStatus.choices)
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    retries = models.PositiveIntegerField(default=0)
    attempt_count = models.PositiveIntegerField(default=0)
    # Attempts that raised; an attempt cut off by a dead worker is not counted against retries.
    failure_count = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A sleep's wake time, when a failed step's next attempt is due, or a wait's timeout.
    wake_at = models.DateTimeField(null=True, blank=True)
    # What a `waiting` step waits for: an event type, or the child execution of an invoke.
    event_type = models.CharField(max_length=200, blank=True, default="")
    child = models.ForeignKey(
        Execution, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A branch of a `step.parallel`: the name of that parallel step (its branches run at once).
    branch_of = models.CharField(max_length=200, blank=True, default="")
    # A step copied into a rerun from a step: the execution whose run produced its outcome
    # (its attempts stay there). A plain id, not a key: pruning that execution leaves it be.
    reused_from = models.UUIDField(null=True, blank=True)

    class Meta:
        ordering = ["execution", "position"]
        # The pages of an execution's steps are keyset ranges on this index.
        indexes = [models.Index(fields=["execution", "position"], name="step_execution_position")]
        constraints = [
            models.UniqueConstraint(fields=["execution", "name"], name="step_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def is_sleep(self) -> bool:
        return self.name.startswith("sleep:")


class Attempt(models.Model):
    """One call of a step's function, with its outcome and timing."""

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=AttemptStatus.choices)
    error_type = models.CharField(max_length=200, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    error_traceback = models.TextField(blank=True, default="")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, default="")  # the Worker id that ran it
    # What its body logged, printed or passed to step.log (engine.attempt_logs); null when none.
    logs = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["step", "number"]
        constraints = [
            models.UniqueConstraint(fields=["step", "number"], name="attempt_unique_number"),
            models.CheckConstraint(condition=Q(number__gte=1), name="attempt_number_positive"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} ({self.status})"


class Event(models.Model):
    """Something sent to an execution; kept until a wait for its type consumes it, once."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=200)
    payload = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()
    consumed_by = models.ForeignKey(
        Step, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    consumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["execution", "type", "consumed_by", "id"], name="event_waiting"),
        ]

    def __str__(self) -> str:
        return f"event {self.type} for {self.execution_id}"


class WorkerStatus(models.TextChoices):
    ALIVE = "alive"
    STOPPING = "stopping"
    DEAD = "dead"


class Worker(models.Model):
    """A worker process: alive while it heartbeats (stamped with the database's clock)."""

    id = models.CharField(primary_key=True, max_length=200)  # "host:pid:random"
    host = models.CharField(max_length=200)
    pid = models.PositiveIntegerField()
    threads = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=WorkerStatus.choices)
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [models.Index(fields=["status", "last_seen_at"], name="worker_status_seen")]

    def __str__(self) -> str:
        return f"worker {self.id} ({self.status})"


class Schedule(models.Model):
    """A `cron:` entry of ploy.yaml as a row, so that every worker and host agree on its next
    tick: the tick that fires moves `next_run_at` on with a conditional UPDATE, once."""

    name = models.CharField(primary_key=True, max_length=100)
    # As the API shows it: the cron expression, or `every 10s`.
    schedule = models.CharField(max_length=200)
    cron = models.CharField(max_length=200, blank=True, default="")
    every_seconds = models.FloatField(null=True, blank=True)
    # The binding it triggers; for Ploy's form, `scheduled` (the internal workflow it runs).
    workflow = models.CharField(max_length=100)
    calls_scheduled = models.BooleanField(default=False)  # Ploy's form: scheduled(event, *, env)
    input = models.JSONField(null=True, blank=True)
    next_run_at = models.DateTimeField()
    last_run_at = models.DateTimeField(null=True, blank=True)  # the last tick that fired
    last_execution = models.ForeignKey(
        Execution, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    paused = models.BooleanField(default=False)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["paused", "next_run_at"], name="schedule_due")]

    def __str__(self) -> str:
        return f"schedule {self.name} ({self.schedule})"


class ExecutionCount(models.Model):
    """Executions created in one minute, by workflow and status: rows the database's triggers
    keep exact on every write of an execution (engine.count_schema), so that counting a window
    reads a bounded number of rows whatever the traffic. Read with SQL (engine.counts)."""

    pk = models.CompositePrimaryKey("bucket", "workflow", "status", "shard")
    bucket = models.BigIntegerField()  # minutes since the Unix epoch of `created_at`
    workflow = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=ExecutionStatus.choices)
    # PostgreSQL: the writing connection's shard (1-16), so that commits do not queue on one
    # row; 0 for settled rows. SQLite has one writer at a time: 0.
    shard = models.SmallIntegerField()
    executions = models.BigIntegerField()  # may be negative in one shard; the sum never is

    class Meta:
        # The triggers' DDL creates the table (engine.count_schema): a flush must not empty it
        # apart from the executions, whose deletes the triggers count.
        managed = False
        db_table = "engine_execution_counts"
        ordering = ["bucket"]


class ExecutionTotal(models.Model):
    """Every execution the database holds, by workflow and status, kept like ExecutionCount."""

    pk = models.CompositePrimaryKey("workflow", "status", "shard")
    workflow = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=ExecutionStatus.choices)
    shard = models.SmallIntegerField()
    executions = models.BigIntegerField()

    class Meta:
        managed = False
        db_table = "engine_execution_totals"
        ordering = ["workflow"]
