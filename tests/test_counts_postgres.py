"""The kept counts on PostgreSQL: exact after every status path, with worker processes, and
with many connections writing at once (each into its shard); counting adds no deadlock.

The tests need PostgreSQL on 127.0.0.1:5432 and are skipped, with the reason, without it."""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from engine.count_schema import COUNTS, SHARDS, TOTALS
from tests.conftest import wait_for
from tests.test_scaleout import manage
from tests.test_serving import postgres_url  # noqa: F401 - a fixture

CHECK = "import json; from tests.counts_paths import differences; print(json.dumps(differences()))"


@pytest.fixture
def env(postgres_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:  # noqa: F811
    """The fresh database, and a data folder (and so a queue) of this test's own."""
    yield {"DATABASE_URL": postgres_url, "PLOY_DATA_DIR": str(tmp_path / "data")}


def shell(env: dict[str, str], code: str) -> object:
    return json.loads(manage(env, "shell", "-c", code).splitlines()[-1])


def test_every_status_path_keeps_the_counts_exact(env):
    found = shell(env, "from tests.counts_paths import main; main()")
    assert found and all(not problems for problems in found.values()), found


def test_worker_processes_keep_the_counts_exact(env, start_worker):
    for _ in range(2):
        start_worker(threads=2, **env)
    ids = [
        manage(env, "trigger", "DATA_FLOW", f'{{"action": "double", "value": {n}}}')
        for n in range(8)
    ]
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as connection:

        def ended() -> bool:
            rows = connection.execute(
                "SELECT COUNT(*) FROM engine_execution WHERE id = ANY(%s::uuid[]) "
                "AND status = 'completed'",
                (ids,),
            ).fetchone()
            return rows is not None and rows[0] == len(ids)

        wait_for(ended, timeout=60, interval=0.2)
    assert shell(env, CHECK) == {}


def insert(cursor: psycopg.Cursor, workflow: str, minutes_ago: float) -> str:
    execution_id = str(uuid.uuid4())
    cursor.execute(
        "INSERT INTO engine_execution (id, binding, workflow, status, created_at, run_count, "
        "parent_step, from_step, concurrency_key, slot) "
        "VALUES (%s, 'B', %s, 'running', %s, 0, '', '', '', '')",
        (execution_id, workflow, datetime.now(UTC) - timedelta(minutes=minutes_ago)),
    )
    return execution_id


def writer(url: str, seed: int, errors: list[BaseException]) -> None:
    """Transactions of several rows each, in random order: inserts, status changes of many
    rows at once, deletes, a workflow renamed, as an engine and an admin would write."""
    rng = random.Random(seed)
    mine: list[str] = []
    try:
        with psycopg.connect(url) as connection, connection.cursor() as cursor:
            for _ in range(30):
                with connection.transaction():
                    for _ in range(rng.randint(1, 4)):
                        mine.append(insert(cursor, rng.choice("ab"), rng.uniform(0, 8)))
                    rng.shuffle(mine)
                    changed = mine[: rng.randint(0, 5)]
                    status = rng.choice(["completed", "failed", "cancelled", "running"])
                    cursor.execute(
                        "UPDATE engine_execution SET status = %s WHERE id = ANY(%s::uuid[])",
                        (status, changed),
                    )
                    if rng.random() < 0.3 and mine:
                        cursor.execute(
                            "UPDATE engine_execution SET workflow = 'c' WHERE id = %s", (mine[-1],)
                        )
                    if rng.random() < 0.3 and mine:
                        cursor.execute("DELETE FROM engine_execution WHERE id = %s", (mine.pop(),))
    except BaseException as error:  # reported by the test
        errors.append(error)


def exact(url: str) -> tuple[dict, dict]:
    with psycopg.connect(url, autocommit=True) as connection:
        kept = connection.execute(
            f"SELECT workflow, status, SUM(executions) FROM {TOTALS} GROUP BY 1, 2 "
            "HAVING SUM(executions) <> 0 ORDER BY 1, 2"
        ).fetchall()
        rows = connection.execute(
            "SELECT workflow, status, COUNT(*) FROM engine_execution GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        minutes = connection.execute(
            f"SELECT bucket, workflow, status, SUM(executions) FROM {COUNTS} GROUP BY 1, 2, 3 "
            "HAVING SUM(executions) <> 0 ORDER BY 1, 2, 3"
        ).fetchall()
        rows_by_minute = connection.execute(
            "SELECT floor(extract(epoch FROM created_at) / 60)::bigint, workflow, status, "
            "COUNT(*) FROM engine_execution GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()
    return {"totals": kept, "minutes": minutes}, {"totals": rows, "minutes": rows_by_minute}


def shards(url: str) -> set[int]:
    with psycopg.connect(url, autocommit=True) as connection:
        return {row[0] for row in connection.execute(f"SELECT DISTINCT shard FROM {COUNTS}")}


def test_concurrent_writers_keep_exact_totals_in_shards_summed_on_read(env):
    url = env["DATABASE_URL"]
    errors: list[BaseException] = []
    threads = [threading.Thread(target=writer, args=(url, seed, errors)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    kept, actual = exact(url)
    assert kept == actual
    assert len(shards(url)) > 1 and shards(url) <= set(range(1, SHARDS + 1))

    # The prune sums settled minutes into shard 0 (here: all of them, ten minutes on).
    later = "(timezone.now() + timedelta(minutes=10))"
    code = "from datetime import timedelta; from django.utils import timezone; "
    code += f"from engine import counts; print(counts.prune({later}))"
    assert shell(env, code) > 0
    assert shards(url) == {0}
    assert exact(url)[0] == actual


def same_shard_connections(url: str) -> tuple[psycopg.Connection, psycopg.Connection]:
    """Two connections whose backends write into the same shard."""
    opened: dict[int, psycopg.Connection] = {}
    while True:
        connection = psycopg.connect(url)
        pid = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
        connection.commit()
        shard = pid % SHARDS
        if shard in opened:
            for other in opened.values():
                if other is not opened[shard]:
                    other.close()
            return opened[shard], connection
        opened[shard] = connection


def interleave(url: str, *, immediate: bool) -> list[BaseException]:
    """A changes a status, then waits for a row B holds; B, writing into the same shard,
    changes a status and commits. The errors either met."""
    with psycopg.connect(url, autocommit=True) as setup:
        cursor = setup.cursor()
        first, second, shared = (insert(cursor, "a", 1) for _ in range(3))
    a, b = same_shard_connections(url)
    errors: list[BaseException] = []

    def wait_for_shared() -> None:
        try:
            a.execute("SELECT 1 FROM engine_execution WHERE id = %s FOR UPDATE", (shared,))
        except psycopg.Error as error:
            errors.append(error)

    with a, b:
        for connection in (a, b):
            connection.execute("SET lock_timeout = '20s'")
            if immediate:
                connection.execute("SET CONSTRAINTS ALL IMMEDIATE")
        a.execute("UPDATE engine_execution SET status = 'completed' WHERE id = %s", (first,))
        b.execute("SELECT 1 FROM engine_execution WHERE id = %s FOR UPDATE", (shared,))
        waiting = threading.Thread(target=wait_for_shared)
        waiting.start()
        try:
            b.execute("UPDATE engine_execution SET status = 'failed' WHERE id = %s", (second,))
            b.commit()
        except psycopg.Error as error:
            errors.append(error)
            b.rollback()
        waiting.join(timeout=30)
        a.commit() if not errors else a.rollback()
    return errors


def test_a_transaction_that_waits_for_a_row_holds_no_count_row(env):
    """The count rows are written at the commit (deferred triggers), so that interleaving goes
    through; counted at once, B would wait for A's shard while A waits for B's row."""
    url = env["DATABASE_URL"]
    assert interleave(url, immediate=False) == []
    kept, actual = exact(url)
    assert kept == actual
    assert dict(((w, s), n) for w, s, n in kept["totals"]) == {
        ("a", "completed"): 1, ("a", "failed"): 1, ("a", "running"): 1,
    }  # fmt: skip

    [error] = interleave(url, immediate=True)
    assert isinstance(error, psycopg.errors.DeadlockDetected)
    assert exact(url)[0] == exact(url)[1]
