"""GET /metrics: executions, waits, attempts, workers and the queue as Prometheus reads them,
built by running executions in this process, scraped with the test client and parsed back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from huey.contrib.djhuey import HUEY
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from engine import events, metrics, runtime
from engine.models import Attempt, Execution, Worker, WorkerStatus

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-token"


def start(binding: str, input: object = None) -> str:
    return runtime.trigger(binding, input).execution_id


def run(execution_id: str, after: float | None = 0) -> Execution:
    """One run, `after` seconds from now; `after=None` runs on the real clock (real durations)."""
    now = None if after is None else timezone.now() + timedelta(seconds=after)
    runtime.run_execution(execution_id, now=now)
    return Execution.objects.get(id=execution_id)


def scrape(**headers: str) -> list[Sample]:
    response = Client().get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    families = text_string_to_metric_families(response.content.decode())
    return [sample for family in families for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    matches = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} samples"
    return matches[0]


def by_label(samples: list[Sample], name: str, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in samples if s.name == name}


def make_worker(name: str, status: WorkerStatus, seconds_ago: float) -> Worker:
    seen = timezone.now() - timedelta(seconds=seconds_ago)
    return Worker.objects.create(
        id=f"host:{name}", host="host", pid=1, status=status, started_at=seen, last_seen_at=seen
    )


def test_executions_started_and_finished_count_by_workflow_and_status():
    for value_ in (1, 2):
        assert run(start("DATA_FLOW", {"action": "double", "value": value_})).status == "completed"
    start("DATA_FLOW", {"action": "double", "value": 3})  # started, not finished
    failing = start("FAILING")
    run(failing)
    assert run(failing, after=5).status == "failed"
    sleeper = start("SLEEPER", {"ms": 60_000})
    run(sleeper)
    runtime.cancel_execution(sleeper)

    samples = scrape()
    started = by_label(samples, "ployweb_executions_started_total", "workflow")
    assert started["data_processing"] == 3
    assert started["failing"] == 1 and started["sleeper"] == 1
    assert started["flaky"] == 0, "a bound workflow is counted from 0 before its first run"
    finished = "ployweb_executions_finished_total"
    assert value(samples, finished, workflow="data_processing", status="completed") == 2
    assert value(samples, finished, workflow="data_processing", status="failed") == 0
    assert value(samples, finished, workflow="failing", status="failed") == 1
    assert value(samples, finished, workflow="sleeper", status="cancelled") == 1


def test_running_executions_no_worker_holds_are_counted_by_what_they_wait_for():
    run(start("SLEEPER", {"ms": 60_000}))
    run(start("SLEEPER", {"ms": 1}))  # over by the scrape, not claimed yet: queued
    run(start("APPROVAL", {}))
    run(start("PARENT", {"value": 1, "values": [2]}))  # its child is queued
    run(start("ERROR_KINDS", {"kind": "later"}))  # RetryAfter(10)
    start("DATA_FLOW", {"action": "double", "value": 1})
    approved = start("APPROVAL", {})
    run(approved)
    events.send_event(approved, "approval", {"ok": True})  # due again: queued

    waiting = by_label(scrape(), "ployweb_executions_waiting", "reason")
    assert waiting == {
        "queued": 4,
        "concurrency": 0,
        "sleep": 1,
        "event": 1,
        "children": 1,
        "retry": 1,
        "other": 0,
    }


def test_executions_a_worker_holds_are_running_not_waiting():
    held = runtime.trigger("SLEEPER", {"ms": 60_000}, run_here=True).execution_id
    start("SLEEPER", {"ms": 60_000})

    samples = scrape()
    running = by_label(samples, "ployweb_executions_running", "workflow")
    assert running["sleeper"] == 1 and running["data_processing"] == 0
    assert value(samples, "ployweb_executions_waiting", reason="queued") == 1

    runtime.run_here(Execution.objects.get(id=held))
    samples = scrape()
    assert value(samples, "ployweb_executions_running", workflow="sleeper") == 0
    assert value(samples, "ployweb_executions_waiting", reason="sleep") == 1


def test_attempt_durations_are_bucketed_by_workflow_and_outcome():
    slow = start("SLOW", {"seconds": 0.3})
    assert run(slow, after=None).status == "completed"
    flaky = start("FLAKY", {"failures": 1})
    run(flaky)
    assert run(flaky, after=5).status == "completed"

    samples = scrape()
    bucket = "ployweb_step_attempt_duration_seconds_bucket"
    assert value(samples, bucket, workflow="slow", status="completed", le="0.25") == 2
    assert value(samples, bucket, workflow="slow", status="completed", le="0.5") == 3
    assert value(samples, bucket, workflow="slow", status="completed", le="+Inf") == 3
    total = "ployweb_step_attempt_duration_seconds_gsum"
    assert 0.3 <= value(samples, total, workflow="slow", status="completed") < 5
    count = "ployweb_step_attempt_duration_seconds_gcount"
    assert value(samples, count, workflow="flaky", status="failed") == 1
    assert value(samples, count, workflow="flaky", status="completed") == 1


def test_attempt_durations_cover_only_the_recent_window_and_the_latest_attempts(monkeypatch):
    for value_ in (1, 2):
        run(start("DATA_FLOW", {"action": "double", "value": value_}))
    long_ago = timezone.now() - metrics.RECENT_WINDOW - timedelta(minutes=1)
    oldest = Attempt.objects.order_by("id")[:3].values_list("id", flat=True)
    Attempt.objects.filter(id__in=list(oldest)).update(started_at=long_ago, finished_at=long_ago)
    count = "ployweb_step_attempt_duration_seconds_gcount"
    assert value(scrape(), count, workflow="data_processing", status="completed") == 3

    monkeypatch.setattr(metrics, "RECENT_ATTEMPTS", 2)
    assert value(scrape(), count, workflow="data_processing", status="completed") == 2


def test_workers_count_by_status_with_silent_ones_dead():
    make_worker("alive", WorkerStatus.ALIVE, 0)
    make_worker("stopping", WorkerStatus.STOPPING, 0)
    make_worker("silent", WorkerStatus.ALIVE, 30)  # past PLOY_WORKER_TIMEOUT_SECONDS
    make_worker("stopped", WorkerStatus.DEAD, 60)
    make_worker("forgotten", WorkerStatus.DEAD, 2 * 3600)  # past DEAD_ROWS_KEPT

    # This test process registers as a worker too when it has run an execution, and its
    # heartbeat puts its row back a moment after the previous test's flush: counted aside.
    def own_rows() -> int:
        return Worker.objects.exclude(id__startswith="host:").count()

    for _ in range(3):
        before = own_rows()
        workers = by_label(scrape(), "ployweb_workers", "status")
        if own_rows() == before:
            break
    assert workers == {"alive": 1 + before, "stopping": 1, "dead": 2}


def test_queue_depth_counts_pending_and_scheduled_messages():
    sleeper = start("SLEEPER", {"ms": 60_000})
    HUEY.flush()
    run(sleeper)  # queues its wake-up, due in a minute
    wake_up = HUEY.dequeue()
    assert wake_up.eta is not None
    HUEY.add_schedule(wake_up)  # what a worker does with a message whose time has not come
    start("DATA_FLOW", {"action": "double", "value": 1})

    samples = scrape()
    assert value(samples, "ployweb_queue_pending_messages") == 1
    assert value(samples, "ployweb_queue_scheduled_messages") == 1


@pytest.mark.parametrize(
    ("token", "headers", "status"),
    [
        (None, {}, 200),
        (TOKEN, {}, 401),
        (TOKEN, {"Authorization": "Bearer wrong"}, 401),
        (TOKEN, {"Authorization": f"Basic {TOKEN}"}, 401),
        (TOKEN, {"Authorization": f"Bearer {TOKEN}"}, 200),
        (TOKEN, {"Authorization": f"bearer {TOKEN}"}, 200),
    ],
)
def test_the_api_token_guards_the_metrics_once_set(settings, token, headers, status):
    settings.PLOY_API_TOKEN = token
    response = Client().get("/metrics", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response["WWW-Authenticate"] == "Bearer"
        assert "detail" in response.json()
    else:
        assert b"ployweb_workers" in response.content


def test_only_get_is_answered():
    assert Client().post("/metrics").status_code == 405


def test_a_scrape_costs_the_same_few_queries_whatever_the_data():
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            scrape()
        return len(captured)

    assert queries() == metrics.SCRAPE_QUERIES
    run(start("DATA_FLOW", {"action": "double", "value": 1}))
    run(start("SLEEPER", {"ms": 60_000}))
    run(start("APPROVAL", {}))
    run(start("PARENT", {"value": 1, "values": [2, 3]}))
    run(start("FAILING"))
    make_worker("alive", WorkerStatus.ALIVE, 0)
    assert queries() == metrics.SCRAPE_QUERIES
