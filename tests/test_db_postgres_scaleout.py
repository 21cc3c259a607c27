"""Scale-out with the example's `env.DB` on PostgreSQL: two worker processes on PostgreSQL +
Redis (this process's db) run the README's example (ploy.py at the project root), whose `store` step
writes through `env.DB` configured with `url_env`; every result lands in the one database.

Skipped, with the reason, where PostgreSQL or Redis is not reachable on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT, redis_url, wait_for, worker_environment
from tests.test_db_postgres import fresh_postgres, reachable
from tests.test_transaction_steps import postgres_migrations

REDIS = redis_url()  # this process's own queue: see tests/conftest.py

pytestmark = [
    pytest.mark.skipif(not reachable(5432), reason="PostgreSQL is not reachable on 127.0.0.1:5432"),
    pytest.mark.skipif(not reachable(6379), reason="Redis is not reachable on 127.0.0.1:6379"),
]


@pytest.fixture
def example_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The example's ploy.yaml with `DB: {url_env: APP_DATABASE_URL}`, a database for Django
    and one for the app, both migrated by `manage.py migrate`; an empty Redis queue."""
    import redis

    (tmp_path / "ploy.yaml").write_text(
        f"main: {ROOT / 'ploy.py'}\n"
        "workflow:\n  DATA_FLOW: data_processing\n"
        "db:\n  DB: {url_env: APP_DATABASE_URL}\n"
    )
    postgres_migrations(tmp_path / "migrations")
    redis.Redis.from_url(REDIS).flushdb()
    with fresh_postgres("ployweb_engine") as engine_url, fresh_postgres("ployweb_app") as app_url:
        env = {
            "DATABASE_URL": engine_url,
            "PLOY_QUEUE_URL": REDIS,
            "PLOY_CONFIG": str(tmp_path / "ploy.yaml"),
            "APP_DATABASE_URL": app_url,
        }
        migrate = [sys.executable, str(ROOT / "manage.py"), "migrate"]
        done = subprocess.run(
            migrate, env=worker_environment(**env), capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert "Applied DB migration 0001_results.sql" in done.stdout
        yield env
    redis.Redis.from_url(REDIS).flushdb()


def test_two_workers_store_the_examples_results_in_one_postgres_database(example_env, start_worker):
    from tests.test_faults_scaleout import PostgresStore

    workers = [start_worker(threads=1, **example_env) for _ in range(2)]
    store = PostgresStore(example_env)
    try:
        inputs = [{"action": ("double", "square")[n % 2], "value": n} for n in range(24)]
        ids = store.trigger_many("DATA_FLOW", inputs)
        wait_for(lambda: store.running_count() == 0, timeout=90, interval=0.2)
        statuses = {row.id: row.status for row in store.executions(ids)}
        assert set(statuses.values()) == {"completed"}, statuses
        writers = store.rows(
            "SELECT DISTINCT a.worker FROM engine_attempt a JOIN engine_step s "
            "ON s.id = a.step_id WHERE s.name = 'store' AND a.status = 'completed'"
        )
    finally:
        store.close()
    ran = {worker_id.split(":")[1] for (worker_id,) in writers}
    assert ran == {str(worker.pid) for worker in workers}, "both workers stored results"
    with psycopg.connect(example_env["APP_DATABASE_URL"]) as app:
        rows = app.execute("SELECT action, input, output FROM results").fetchall()
    expected = {
        (
            item["action"],
            item["value"],
            item["value"] * (2 if item["action"] == "double" else item["value"]),
        )
        for item in inputs
    }
    assert len(rows) == len(inputs)
    assert {(action, int(value), int(output)) for action, value, output in rows} == expected
