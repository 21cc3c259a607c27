"""Every way an execution's status changes, and a check that the kept counts match the rows:
run in the test process on SQLite, and through `manage.py shell` on PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

from django.core.management import call_command
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from engine import bulk, count_schema, counts, runtime
from engine.models import Execution, ExecutionStatus


def kept_buckets() -> dict[tuple[int, str, str], int]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT bucket, workflow, status, SUM(executions) FROM {count_schema.COUNTS} "
            "GROUP BY bucket, workflow, status"
        )
        return {(b, w, s): int(n) for b, w, s, n in cursor.fetchall() if n}


def actual_buckets() -> dict[tuple[int, str, str], int]:
    """The rows' own per-minute counts, over the minutes the counts keep."""
    since = timezone.now() - counts.KEPT + timedelta(minutes=5)
    bucket = count_schema.bucket_sql("created_at", connection.vendor).replace("%", "%%")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {bucket}, workflow, status, COUNT(*) FROM {count_schema.EXECUTIONS} "
            "WHERE created_at >= %s GROUP BY 1, 2, 3",
            [Execution._meta.get_field("created_at").get_db_prep_value(since, connection)],
        )
        return {(b, w, s): int(n) for b, w, s, n in cursor.fetchall()}


def differences() -> dict[str, object]:
    """What the kept counts say that the rows do not (empty when exact)."""
    rows = Execution.objects.order_by().values_list("workflow", "status").annotate(n=Count("*"))
    actual = {(workflow, status): n for workflow, status, n in rows}
    kept = {key: total for key, total in counts.totals().items() if total}
    problems: dict[str, object] = {}
    if kept != actual:
        problems["totals"] = {"kept": sorted(kept.items()), "rows": sorted(actual.items())}
    oldest = counts.bucket_of(timezone.now() - counts.KEPT + timedelta(minutes=5))
    buckets = {key: n for key, n in kept_buckets().items() if key[0] >= oldest}
    if buckets != actual_buckets():
        problems["buckets"] = {
            "kept": sorted(buckets.items()),
            "rows": sorted(actual_buckets().items()),
        }
    return problems


def exercise() -> dict[str, dict[str, object]]:
    """Each status path in turn, with the differences found after each (all empty if exact)."""
    found: dict[str, dict[str, object]] = {}

    def check(path: str) -> None:
        found[path] = differences()

    done = runtime.trigger("DATA_FLOW", {"action": "double", "value": 1}).execution_id
    check("trigger")
    runtime.run_execution(done)
    check("run to completion")
    failing = runtime.trigger("FAILING").execution_id
    runtime.run_execution(failing)
    runtime.run_execution(failing, now=timezone.now() + timedelta(seconds=5))
    assert Execution.objects.get(id=failing).status == ExecutionStatus.FAILED
    check("failure")
    sleeper = runtime.trigger("SLEEPER", {"ms": 60_000}).execution_id
    runtime.run_execution(sleeper)
    runtime.cancel_execution(sleeper)
    check("cancel")
    for value in range(3):
        runtime.trigger("SLEEPER", {"ms": 60_000 + value})
    parent = runtime.trigger("PARENT", {"value": 1, "values": [2, 3]}).execution_id
    runtime.run_execution(parent)  # starts its children: a cancel of many rows at once
    assert bulk.cancel_matching(Execution.objects.running()) >= 4
    check("bulk cancel")
    runtime.rerun_execution(done)
    bulk.rerun_matching(Execution.objects.filter(id__in=[failing, sleeper]))
    check("rerun")
    Execution.objects.filter(id=failing).update(status=ExecutionStatus.COMPLETED)
    Execution.objects.filter(id=done).update(workflow="renamed", created_at=timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {count_schema.EXECUTIONS} SET status = %s WHERE status = %s",
            [ExecutionStatus.FAILED, ExecutionStatus.CANCELLED],
        )
    check("bulk and raw updates")
    Execution.objects.filter(id__in=[done, parent]).delete()
    check("delete")
    call_command("prune", "--older-than", "0", stdout=StringIO())
    check("prune command")
    return found


def main() -> None:
    """For `manage.py shell -c`: the paths' differences as one line of JSON."""
    print(json.dumps(exercise()))
