"""The list's "last hour" counters and the workflows page's counts: one statement, exact, that
reads the kept per-minute counts and at most one minute of executions, whatever the traffic."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dashboard import queries
from engine.count_schema import COUNTS
from engine.models import Execution
from tests.test_api import make_execution

pytestmark = pytest.mark.django_db


def created_ago(delta: timedelta, **fields: str) -> Execution:
    """An execution created `delta` ago."""
    moment = timezone.now() - delta
    return Execution.objects.create(
        binding=fields.get("binding", "DATA_FLOW"),
        workflow=fields.get("workflow", "data_processing"),
        status=fields.get("status", "completed"),
        created_at=moment,
    )


def test_the_counters_count_the_window_by_status_in_one_statement():
    make_execution(), make_execution(status="failed"), make_execution(status="failed")
    created_ago(timedelta(minutes=50), status="cancelled")
    created_ago(timedelta(hours=2), status="failed")  # outside the window

    with CaptureQueriesContext(connection) as captured:
        counts = queries.counts_by_status(timezone.now() - timedelta(hours=1))

    assert counts == {"running": 1, "completed": 0, "failed": 2, "cancelled": 1}
    [sql] = [query["sql"] for query in captured.captured_queries]
    assert sql.count(f"FROM {COUNTS} WHERE bucket >= ") == 1
    assert sql.count("SELECT COUNT(*) FROM") == 4  # the part-minute at the window's start
    assert sql.count('"status" = ') == 4 and sql.count("created_at < ") == 4


def test_the_counters_read_the_minutes_by_key_and_the_part_minute_from_the_index():
    make_execution()
    since = timezone.now() - timedelta(hours=1)
    with CaptureQueriesContext(connection) as captured:
        queries.counts_by_status(since)
    [sql] = [query["sql"] for query in captured.captured_queries]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
        plan = " | ".join(str(row[-1]) for row in cursor.fetchall())
    assert plan.count("COVERING INDEX execution_status_created") == 4, plan
    assert f"SEARCH {COUNTS} USING PRIMARY KEY (bucket>?)" in plan, plan
    assert "SCAN engine_execution" not in plan and f"SCAN {COUNTS}" not in plan, plan


@pytest.mark.parametrize("seconds", [0, 0.000001, 17.5, 59.999999])
def test_the_window_is_exact_to_the_microsecond_inside_its_first_minute(seconds):
    since = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=30)
    since += timedelta(seconds=seconds)
    for offset in (-1, 0, 1, 60_000_000 - seconds * 1_000_000):  # microseconds from `since`
        Execution.objects.create(
            binding="DATA_FLOW",
            workflow="data_processing",
            status="completed",
            created_at=since + timedelta(microseconds=offset),
        )
    expected = Execution.objects.filter(created_at__gte=since).count()
    assert queries.counts_by_status(since)["completed"] == expected == 3


def test_the_workflows_page_counts_each_workflow_and_status_in_one_statement():
    make_execution(), make_execution("flaky", binding="FLAKY", status="completed")
    created_ago(timedelta(days=2), workflow="flaky", status="failed")  # outside the window

    with CaptureQueriesContext(connection) as captured:
        activity = queries.workflow_activity(
            ["data_processing", "flaky"], since=timezone.now() - timedelta(hours=24)
        )

    assert activity["data_processing"].counts == {
        "running": 1, "completed": 0, "failed": 0, "cancelled": 0,
    }  # fmt: skip
    assert activity["flaky"].counts["completed"] == 1 and activity["flaky"].counts["failed"] == 0
    counting = [q["sql"] for q in captured.captured_queries if "COUNT(*)" in q["sql"]]
    assert len(captured.captured_queries) == 2 and len(counting) == 1
    assert counting[0].count("SELECT COUNT(*) FROM") == 8


def test_the_list_page_still_shows_the_counters(client):
    make_execution(status="failed")
    html = client.get("/").content.decode()
    assert "failed" in html
