"""Bulk-load executions and time the reads whose cost must not grow with them: the list's
"last hour" counters, the workflows page's counts, and the admin's execution lists.

    PLOY_DATA_DIR=/tmp/probe python -m bench.scale_probe --load 1000000 --hour 260000
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/probe python -m bench.scale_probe --load ...

Loads (raw inserts, COPY on PostgreSQL) only into an empty table, spread over 30 days with
`--hour` of them in the last hour, then prints p50 / p95 of each read over `--samples` runs.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATUSES = ("running", "completed", "completed", "completed", "failed", "cancelled")
WORKFLOWS = (("DATA_FLOW", "data_processing"), ("CHAIN", "chain"))
COLUMNS = (
    "id", "binding", "workflow", "status", "input", "parent_step", "created_at",
    "started_at", "finished_at", "wake_at", "run_count",
)  # fmt: skip


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ployweb.settings")
    os.environ.setdefault("PLOY_CONFIG", str(ROOT / "bench" / "ploy.yaml"))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def uuid7_at(moment: datetime, rng: random.Random) -> uuid.UUID:
    """A UUIDv7 of that millisecond, as the engine's own ids are."""
    value = (int(moment.timestamp() * 1000) << 80) | (0x7 << 76) | rng.getrandbits(76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # the RFC 4122 variant
    return uuid.UUID(int=value)


def rows(total: int, in_hour: int, now: datetime) -> Iterator[tuple]:
    """Oldest first, as triggers write them: `total - in_hour` over 30 days, then the hour."""
    rng = random.Random(7)
    older = total - in_hour
    for index in range(total):
        if index < older:
            moment = now - timedelta(days=30) + timedelta(days=30 - 1 / 24) * index / older
        else:
            moment = now - timedelta(hours=1) + timedelta(hours=1) * (index - older) / in_hour
        binding, workflow = WORKFLOWS[index % len(WORKFLOWS)]
        status = rng.choice(STATUSES)
        finished = None if status == "running" else moment
        wake = moment if status == "running" else None
        yield (
            uuid7_at(moment, rng), binding, workflow, status, '{"value": 1}', "",
            moment, moment, finished, wake, 1,
        )  # fmt: skip


def load(total: int, in_hour: int) -> None:
    from django.db import connection

    from engine.models import Execution

    if Execution.objects.exists():
        print("the table already holds executions: not loading")
        return
    started = time.perf_counter()
    now = datetime.now(UTC)
    if connection.vendor == "postgresql":
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY engine_execution ({', '.join(COLUMNS)}) FROM STDIN") as copy,
        ):
            for row in rows(total, in_hour, now):
                copy.write_row(row)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE engine_execution")
    else:
        placeholders = ", ".join("?" for _ in COLUMNS)
        sql = f"INSERT INTO engine_execution ({', '.join(COLUMNS)}) VALUES ({placeholders})"
        connection.ensure_connection()
        raw = connection.connection
        batch: list[tuple] = []
        for row in rows(total, in_hour, now):
            batch.append(sqlite_row(row))
            if len(batch) == 20_000:
                raw.executemany(sql, batch)
                raw.commit()
                batch = []
        raw.executemany(sql, batch)
        raw.commit()
        raw.execute("ANALYZE")
    print(f"loaded {total:,} executions in {time.perf_counter() - started:.0f} s")


def sqlite_row(row: tuple) -> tuple:
    def text(value: object) -> object:
        if isinstance(value, uuid.UUID):
            return value.hex
        if isinstance(value, datetime):
            return value.replace(tzinfo=None).isoformat(sep=" ")
        return value

    return tuple(text(value) for value in row)


def timed(function: Callable[[], object], samples: int) -> tuple[float, float]:
    function()  # warm
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def probes() -> dict[str, Callable[[], object]]:
    from django.contrib.auth.models import User
    from django.test import Client
    from django.utils import timezone

    from dashboard import queries
    from engine.models import Execution

    user, _ = User.objects.get_or_create(
        username="probe", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    some = Execution.objects.order_by("-id").values_list("id", flat=True)[1000]

    def page(url: str, **params: str) -> Callable[[], object]:
        def get() -> object:
            response = client.get(url, params)
            assert response.status_code == 200, response.status_code
            return response

        return get

    return {
        "list counters (last hour by status)": lambda: queries.counts_by_status(
            timezone.now() - timedelta(hours=1)
        ),
        "workflows page counts (24 h by workflow and status)": lambda: queries.workflow_activity(
            [name for _binding, name in WORKFLOWS], since=timezone.now() - timedelta(hours=24)
        ),
        "admin execution list": page("/admin/engine/execution/"),
        "admin list filtered by workflow and status": page(
            "/admin/engine/execution/", workflow="data_processing", status__exact="failed"
        ),
        "admin search by an id's first 13 characters": page(
            "/admin/engine/execution/", q=str(some)[:13]
        ),
        "admin list page 100": page("/admin/engine/execution/", p="100"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load", type=int, default=0, help="executions to load if empty")
    parser.add_argument("--hour", type=int, default=0, help="of which in the last hour")
    parser.add_argument("--samples", type=int, default=30)
    options = parser.parse_args()
    setup()
    if options.load:
        load(options.load, options.hour)
    from django.db import connection

    print(f"{connection.vendor}: p50 / p95 ms over {options.samples} runs")
    for name, probe in probes().items():
        p50, p95 = timed(probe, options.samples)
        print(f"  {name:<55} {p50:8.1f} {p95:8.1f}")


if __name__ == "__main__":
    main()
