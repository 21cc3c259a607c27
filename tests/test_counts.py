"""The counts the database keeps (engine.counts, engine.count_schema) on SQLite: exact after
every status path, whatever writes it (the ORM, raw SQL, a worker process), bounded in rows,
pruned, and repaired after a migrate that rebuilt the executions table."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from dashboard import queries
from engine import count_schema, counts, runtime
from engine.models import Execution
from tests.conftest import wait_for
from tests.counts_paths import differences, exercise, kept_buckets
from tests.test_counters import created_ago

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_status_path_keeps_the_counts_exact():
    found = exercise()
    assert found and all(not problems for problems in found.values()), found


def test_a_worker_process_keeps_the_counts_exact(start_worker):
    start_worker(threads=2)
    ids = [
        runtime.trigger("DATA_FLOW", {"action": "double", "value": n}).execution_id
        for n in range(6)
    ]
    ids.append(runtime.trigger("FAILING").execution_id)
    wait_for(
        lambda: not Execution.objects.filter(id__in=ids, status="running").exists(), timeout=60
    )
    assert differences() == {}
    assert counts.totals()["data_processing", "completed"] == 6


def test_a_minute_of_executions_is_one_row_per_workflow_and_status():
    for _ in range(300):
        created_ago(timedelta(minutes=30), status="completed")
    created_ago(timedelta(minutes=30), status="failed")
    minute = counts.bucket_of(timezone.now() - timedelta(minutes=30))
    rows = {key: n for key, n in kept_buckets().items() if key[0] == minute}
    assert rows == {
        (minute, "data_processing", "completed"): 300,
        (minute, "data_processing", "failed"): 1,
    }


def test_the_prune_drops_old_minutes_and_zeros_and_keeps_the_totals():
    counts.prune()  # the zeros the flush after an earlier test left
    created_ago(timedelta(hours=30))  # older than the minutes kept
    moved = created_ago(timedelta(minutes=10), status="running")
    Execution.objects.filter(id=moved.id).update(status="completed")  # leaves running at 0
    recent = created_ago(timedelta(minutes=20), status="failed")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {count_schema.COUNTS}")
        before = cursor.fetchone()[0]

    assert counts.prune() == 2

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {count_schema.COUNTS}")
        assert cursor.fetchone()[0] == before - 2
    assert counts.totals()["data_processing", "completed"] == 2
    assert differences() == {}
    since = timezone.now() - timedelta(hours=1)
    assert queries.counts_by_status(since) == {
        "running": 0, "completed": 1, "failed": 1, "cancelled": 0,
    }  # fmt: skip
    assert recent.status == "failed"


def test_a_table_rebuild_drops_the_triggers_and_migrate_puts_them_back_counted_again():
    created_ago(timedelta(minutes=5), status="running")
    with connection.schema_editor() as editor:
        editor._remake_table(Execution)  # what Django does on SQLite for many ALTERs
    assert set(count_schema.missing(connection)) == set(count_schema.SQLITE_TRIGGERS)
    created_ago(timedelta(minutes=3), status="failed")  # uncounted: no trigger
    Execution.objects.update(status="cancelled")
    assert differences() != {}

    call_command("migrate", verbosity=0, stdout=StringIO())

    assert count_schema.missing(connection) == []
    assert differences() == {}
    assert counts.totals() == {("data_processing", "cancelled"): 2}
    created_ago(timedelta(minutes=1), status="completed")
    assert differences() == {}, "counted again by the triggers"


def test_a_migrate_with_nothing_missing_counts_nothing_again():
    created_ago(timedelta(minutes=5))
    with connection.cursor() as cursor:  # a wrong count stays wrong: nothing was rebuilt
        cursor.execute(
            f"UPDATE {count_schema.TOTALS} SET executions = executions + 7 "
            "WHERE status = 'completed'"
        )
    call_command("migrate", verbosity=0, stdout=StringIO())
    assert counts.totals() == {("data_processing", "completed"): 8}


def test_a_trigger_of_another_version_is_replaced_and_counted_again():
    name = count_schema.TRIGGERS[0]
    with connection.cursor() as cursor:  # an older body that counts nothing
        cursor.execute(f"DROP TRIGGER {name}")
        cursor.execute(
            f"CREATE TRIGGER {name} AFTER INSERT ON {count_schema.EXECUTIONS} BEGIN SELECT 1; END"
        )
    created_ago(timedelta(minutes=5), status="failed")
    assert count_schema.missing(connection) == [name]

    call_command("migrate", verbosity=0, stdout=StringIO())

    assert count_schema.missing(connection) == []
    assert counts.totals() == {("data_processing", "failed"): 1}
    created_ago(timedelta(minutes=1), status="failed")
    assert differences() == {}


def test_the_migration_counts_the_executions_already_there():
    created_ago(timedelta(minutes=5), status="completed")
    executor = MigrationExecutor(connection)
    graph = executor.loader.graph
    [counted] = [key for key in graph.nodes if key[1].endswith("_execution_counts")]
    # To just before the counts' migration, whatever number it ends up with.
    executor.migrate([parent.key for parent in graph.node_map[counted].parents])
    assert set(count_schema.missing(connection)) >= {count_schema.COUNTS, count_schema.TOTALS}
    created_ago(timedelta(minutes=2), status="failed")
    created_ago(timedelta(hours=3), workflow="flaky", status="cancelled")

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes("engine"))

    assert count_schema.missing(connection) == []
    assert differences() == {}
    assert counts.totals() == {
        ("data_processing", "completed"): 1,
        ("data_processing", "failed"): 1,
        ("flaky", "cancelled"): 1,
    }


def test_a_flush_leaves_the_counts_empty_with_the_table():
    created_ago(timedelta(minutes=5))
    call_command("flush", interactive=False, verbosity=0)
    assert {key: n for key, n in counts.totals().items() if n} == {}
    assert differences() == {}


def test_a_window_longer_than_the_minutes_kept_is_refused():
    with pytest.raises(ValueError, match="count older executions from their rows"):
        queries.counts_by_status(timezone.now() - counts.KEPT)
