"""`GET /metrics` for Prometheus, behind the API token when one is set.

Workers are many processes on many hosts, so no process's own counters tell the whole story:
every figure is read from the database (the source of truth) at scrape time, in a fixed number
of queries (SCRAPE_QUERIES), each bounded: executions by (workflow, status) from the totals
the database keeps (engine.counts), the running ones by what they wait for, the attempts of
the last hour (at most the latest RECENT_ATTEMPTS), and the worker rows. Queue depth comes
from Huey's storage.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from django.db.models import (
    BigIntegerField,
    Case,
    CharField,
    Count,
    ExpressionWrapper,
    FloatField,
    Func,
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Now
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from huey.contrib.djhuey import HUEY
from ninja.errors import AuthenticationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from engine import counts as execution_counts
from engine import registry
from engine.api import ApiToken
from engine.models import (
    FINISHED_STATUSES,
    Attempt,
    AttemptStatus,
    Execution,
    SlotStatus,
    Step,
    StepStatus,
    Worker,
    WorkerStatus,
)
from engine.workers import DEAD_ROWS_KEPT, timeout

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.models.sql.compiler import SQLCompiler

logger = logging.getLogger(__name__)

SCRAPE_QUERIES = 4  # executions, running executions, recent attempts, workers
# The attempt histogram covers the attempts that finished this recently, read from at most
# this many of the latest attempt ids (a range of the primary key, whatever the table's size).
RECENT_WINDOW = timedelta(hours=1)
RECENT_ATTEMPTS = 10_000
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

# What a running execution that no worker holds, and that is not due yet, waits for: its
# latest step in one of these states, the first match naming it.
STEP_WAITS = (
    ("sleep", Q(status=StepStatus.SLEEPING)),
    ("event", Q(status=StepStatus.WAITING) & ~Q(event_type="")),
    ("children", Q(status=StepStatus.WAITING, event_type="")),
    ("retry", Q(status=StepStatus.RUNNING, wake_at__isnull=False)),
)
HELD, QUEUED, CONCURRENCY, OTHER = "held", "queued", "concurrency", "other"
WAIT_REASONS = (QUEUED, CONCURRENCY, *(reason for reason, _ in STEP_WAITS), OTHER)


@require_GET
def scrape(request: HttpRequest) -> HttpResponse:
    """The figures in Prometheus's text format; 401 without the API token when one is set."""
    try:
        ApiToken()(request)
    except AuthenticationError as error:
        response = JsonResponse({"detail": error.message}, status=401)
        response["WWW-Authenticate"] = "Bearer"
        return response
    return HttpResponse(generate_latest(METRICS), content_type=CONTENT_TYPE_LATEST)


class DatabaseCollector(Collector):
    """Reads every figure at collection time; nothing is kept between scrapes."""

    def collect(self) -> Iterator[Metric]:
        workflows = _workflow_names()
        yield from execution_totals(workflows)
        yield from running_executions(workflows)
        yield attempt_durations()
        yield workers()
        yield from queue_depth()


def _workflow_names() -> list[str]:
    """The workflows bound in ploy.yaml: their counters exist (at 0) before their first run."""
    return sorted({binding.name for binding in registry.current().config.workflows})


def execution_totals(workflows: Iterable[str]) -> Iterator[Metric]:
    """From the totals the database keeps by (workflow, status) (engine.counts): a few rows,
    whatever the number of executions."""
    started = CounterMetricFamily(
        "ployweb_executions_started",
        "Executions triggered, by workflow (every execution the database holds).",
        labels=["workflow"],
    )
    finished = CounterMetricFamily(
        "ployweb_executions_finished",
        "Executions that ended, by workflow and final status.",
        labels=["workflow", "status"],
    )
    counts: dict[tuple[str, str], int] = defaultdict(int, execution_counts.totals())
    names = sorted({*workflows, *(workflow for workflow, _ in counts)})
    for workflow in names:
        total = sum(count for (name, _), count in counts.items() if name == workflow)
        started.add_metric([workflow], total)
        for status in FINISHED_STATUSES:
            finished.add_metric([workflow, status], counts[workflow, status])
    yield started
    yield finished


def running_executions(workflows: Iterable[str]) -> Iterator[Metric]:
    """Running executions by workflow and state (held, or what it waits for), in one query."""
    state = Case(
        When(owner__isnull=False, then=Value(HELD)),
        When(slot=SlotStatus.WAITING, then=Value(CONCURRENCY)),  # before any step of its own
        When(wake_at__lte=Now(), then=Value(QUEUED)),
        default=Coalesce(_step_wait(), Value(OTHER)),
        output_field=CharField(),
    )
    rows = (
        Execution.objects.running()
        .order_by()
        .annotate(state=state)
        .values("workflow", "state")
        .annotate(count=Count("*"))
    )
    held = dict.fromkeys(workflows, 0)
    waiting = dict.fromkeys(WAIT_REASONS, 0)
    for row in rows:
        if row["state"] == HELD:
            held[row["workflow"]] = row["count"]
        else:
            waiting[row["state"]] += row["count"]
    yield _gauge(
        "ployweb_executions_running",
        "Executions a live worker holds now, by workflow.",
        "workflow",
        held,
    )
    yield _gauge(
        "ployweb_executions_waiting",
        "Running executions no worker holds, by what they wait for.",
        "reason",
        waiting,
    )


def _step_wait() -> Subquery:
    """The reason named by the execution's latest waiting step (read by the execution's key)."""
    any_wait = Q()
    for _, condition in STEP_WAITS:
        any_wait |= condition
    reason = Case(
        *(When(condition, then=Value(name)) for name, condition in STEP_WAITS),
        output_field=CharField(),
    )
    steps = Step.objects.filter(any_wait, execution=OuterRef("pk")).order_by("-position")
    return Subquery(steps.annotate(reason=reason).values("reason")[:1])


def attempt_durations() -> Metric:
    """Finished attempts of the recent window, counted per bucket in the database: one query."""
    histogram = GaugeHistogramMetricFamily(
        "ployweb_step_attempt_duration_seconds",
        "Step attempts that finished in the last hour and how long each ran, by workflow and "
        "outcome.",
        labels=["workflow", "status"],
    )
    per_bucket: dict[tuple[str, str], list[int]] = {}
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for row in _recent_attempts():
        key = (row["workflow"], row["status"])
        per_bucket.setdefault(key, [0] * (len(DURATION_BUCKETS) + 1))[row["bucket"]] = row["count"]
        totals[key] += float(row["total"] or 0)
    bounds = [*map(floatToGoString, DURATION_BUCKETS), "+Inf"]
    for key, counts in sorted(per_bucket.items()):
        buckets = list(zip(bounds, accumulate(counts), strict=True))
        histogram.add_metric(list(key), buckets, totals[key])
    return histogram


def _recent_attempts() -> list[Mapping[str, Any]]:
    """(workflow, status, bucket, count, total seconds): the smallest bucket each fits in."""
    latest = Attempt.objects.order_by("-id").values("id")[:1]
    oldest_id = ExpressionWrapper(
        Subquery(latest) - RECENT_ATTEMPTS, output_field=BigIntegerField()
    )
    # A scalar subquery, not a join: each attempt of the range finds its workflow by primary
    # keys, so no plan can trade that for a scan of every step.
    workflow = Step.objects.filter(id=OuterRef("step_id")).values("execution__workflow")[:1]
    bucket = Case(
        *(When(seconds__lte=bound, then=index) for index, bound in enumerate(DURATION_BUCKETS)),
        default=len(DURATION_BUCKETS),
        output_field=IntegerField(),
    )
    return list(
        Attempt.objects.order_by()
        .filter(id__gt=oldest_id, finished_at__gte=Now() - RECENT_WINDOW)
        .filter(status__in=[AttemptStatus.COMPLETED, AttemptStatus.FAILED])
        .alias(seconds=Seconds("finished_at", "started_at"))
        .values("status", workflow=Subquery(workflow), bucket=bucket)
        .annotate(count=Count("*"), total=Sum("seconds"))
    )


class Seconds(Func):
    """`end - start` in seconds, in the database's own arithmetic: Django's datetime
    subtraction on SQLite calls back into Python for every row."""

    template = "EXTRACT(EPOCH FROM (%(expressions)s))"
    arg_joiner = " - "
    arity = 2
    output_field = FloatField()

    def as_sqlite(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra: Any
    ) -> tuple[str, tuple[str | int, ...]]:
        return self.as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s)) * 86400.0)",
            arg_joiner=") - julianday(",
            **extra,
        )


def workers() -> Metric:
    """Worker processes by status: a live row silent for the timeout counts as dead (as in
    GET /api/workers), and dead ones count for an hour after their last heartbeat."""
    silent = Q(last_seen_at__lt=Now() - timeout())
    counts = Worker.objects.filter(last_seen_at__gte=Now() - DEAD_ROWS_KEPT).aggregate(
        **{
            WorkerStatus.ALIVE: Count("id", filter=Q(status=WorkerStatus.ALIVE) & ~silent),
            WorkerStatus.STOPPING: Count("id", filter=Q(status=WorkerStatus.STOPPING) & ~silent),
            WorkerStatus.DEAD: Count("id", filter=Q(status=WorkerStatus.DEAD) | silent),
        }
    )
    return _gauge("ployweb_workers", "Worker processes, by status.", "status", counts)


def queue_depth() -> Iterator[Metric]:
    try:
        pending, scheduled = HUEY.pending_count(), HUEY.scheduled_count()
    except Exception as error:  # any queue backend's error: the database's figures still answer
        logger.warning("metrics: cannot read the queue's depth: %s", error)
        return
    yield GaugeMetricFamily(
        "ployweb_queue_pending_messages",
        "Queue messages no worker has read yet (one due later moves to the schedule once read).",
        value=pending,
    )
    yield GaugeMetricFamily(
        "ployweb_queue_scheduled_messages",
        "Queue messages set aside until their time (wake-ups of sleeps, retries, timeouts).",
        value=scheduled,
    )


def _gauge(name: str, documentation: str, label: str, values: dict[str, int]) -> Metric:
    gauge = GaugeMetricFamily(name, documentation, labels=[label])
    for value in sorted(values):
        gauge.add_metric([value], values[value])
    return gauge


METRICS = CollectorRegistry(auto_describe=False)
METRICS.register(DatabaseCollector())
