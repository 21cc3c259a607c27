"""The execution page's summary of the steps outside its window: one query over two ranges of
the (execution, position) index, and the same figures as counting every step by hand."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from dashboard import execution_reads as reads
from dashboard import presenters
from dashboard.execution_reads import FINISHED_STEP_STATUSES, SpanSummary, StepSummary
from engine.models import Execution, Step
from tests.test_dashboard import detail_url, make_execution

pytestmark = pytest.mark.django_db

STATUSES = ["completed", "failed", "running", "sleeping", "waiting", "cancelled", "completed"]


def mixed_steps(execution: Execution, count: int) -> None:
    """Steps of every status, some unstarted or unfinished, with wake times and event types
    that are not in position order."""
    base = execution.created_at
    Step.objects.bulk_create(
        Step(
            execution=execution,
            name=f"step-{position:04d}",
            position=position,
            status=(status := STATUSES[position % len(STATUSES)]),
            input={"binding": "SLEEPER"} if position % 5 == 0 else None,
            attempt_count=position % 3,
            failure_count=position % 2,
            started_at=None if position == 3 else base + timedelta(seconds=(position * 7) % 50),
            finished_at=base + timedelta(seconds=60 - position % 13)
            if status in FINISHED_STEP_STATUSES
            else None,
            wake_at=base + timedelta(seconds=(position * 11) % 90) if position % 4 else None,
            event_type=f"event-{(position * 3) % 10}" if status == "waiting" else "",
        )
        for position in range(count)
    )


def by_hand(steps: list[Step], span: list[Step]) -> SpanSummary:
    if not span:
        return SpanSummary()
    started = [step.started_at for step in span if step.started_at]
    finished = [step.finished_at for step in span if step.finished_at]
    return SpanSummary(
        count=len(span),
        failed=sum(step.status == "failed" for step in span),
        running=sum(step.status not in FINISHED_STEP_STATUSES for step in span),
        first_started=min(started, default=None),
        last_finished=max(finished, default=None),
        first_position=span[0].position,
        last_position=span[-1].position,
    )


def expected(steps: list[Step], window: list[Step], *, live: bool, after: int | None):
    first = window[0].position if window else (after + 1 if after is not None else 0)
    last = window[-1].position if window else (after if after is not None else -1)
    wakes = [step.wake_at for step in steps if step.wake_at and step.status != "waiting"]
    events = [step.event_type for step in steps if step.status == "waiting"]
    return {
        "total": len(steps),
        "before": by_hand(steps, [s for s in steps if s.position < first])
        if after is not None
        else SpanSummary(),
        "after": by_hand(steps, [s for s in steps if s.position > last]),
        "last_started": max((s.started_at for s in steps if s.started_at), default=None),
        "last_finished": max((s.finished_at for s in steps if s.finished_at), default=None),
        "last_wake": max(wakes, default=None) if live else None,
        "waiting_event": max(events, default="") if live else "",
    }


def figures(summary: StepSummary) -> dict[str, object]:
    return {name: getattr(summary, name) for name in expected([], [], live=False, after=None)}


@pytest.mark.parametrize("live", [False, True])
@pytest.mark.parametrize(
    ("count", "after"),
    [
        (0, None),
        (1, None),
        (30, None),
        (120, None),
        (120, 0),
        (120, 49),
        (120, 100),
        (120, 119),
        (120, 500),
    ],
)
def test_the_summary_counts_what_counting_every_step_counts(count, after, live) -> None:
    execution = make_execution(status="running", finished=None)
    mixed_steps(execution, count)
    steps = list(Step.objects.filter(execution=execution).order_by("position"))
    window, _ = reads.step_window(execution.id, after=after)

    with CaptureQueriesContext(connection) as queries:
        summary = reads.step_summary(execution.id, window, live=live, after=after)

    assert figures(summary) == expected(steps, window, live=live, after=after)
    assert len(queries) == 1
    assert "binding" not in queries[0]["sql"]  # no step's JSON is parsed


def test_the_summary_of_a_page_in_the_middle_reads_only_the_ranges_beside_it() -> None:
    execution = make_execution()
    mixed_steps(execution, 200)
    window, _ = reads.step_window(execution.id, after=99)

    with CaptureQueriesContext(connection) as queries:
        reads.step_summary(execution.id, window, live=True, after=99)

    sql = queries[0]["sql"]
    assert '"position" > 149' in sql and '"position" < 100' in sql


@pytest.mark.parametrize(
    "change",
    [
        {"attempt_count": 9},
        {"failure_count": 9},
        {"status": "failed"},
        {"status": "waiting"},
        {"status": "sleeping"},
    ],
)
@pytest.mark.parametrize("position", [10, 120, 190])
def test_a_poll_notices_a_change_before_in_or_after_the_window(position, change) -> None:
    execution = make_execution(status="running", finished=None)
    mixed_steps(execution, 200)
    Step.objects.filter(execution=execution, position=position).update(status="completed")
    now = execution.created_at + timedelta(minutes=5)
    before = presenters.load(execution.id, now=now, after=99).fingerprint
    assert presenters.load(execution.id, now=now, after=99).fingerprint == before

    Step.objects.filter(execution=execution, position=position).update(**change)

    assert presenters.load(execution.id, now=now, after=99).fingerprint != before


def test_the_page_asks_for_children_only_when_the_execution_has_some(
    client: Client, django_assert_num_queries
) -> None:
    parent = make_execution()
    mixed_steps(parent, 10)  # invoke-like inputs, but no child
    with django_assert_num_queries(5):
        client.get(detail_url(parent))

    Execution.objects.create(
        binding="SLEEPER",
        workflow="sleeper",
        status="running",
        created_at=parent.created_at,
        parent=parent,
        parent_step="step-0000",
    )
    with django_assert_num_queries(7):
        html = client.get(detail_url(parent)).content.decode()
    assert 'id="children"' in html
