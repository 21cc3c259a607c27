"""Bulk-loads a big history for the scale benchmark: N executions of one step and one attempt
each, spread over a week with a busy last hour (a quarter of them), plus three big ones (10,000
steps; one step of 100 attempts; values of about 1 MB). Raw multi-row inserts in big
transactions on SQLite, COPY on PostgreSQL: the ORM would take an hour for a million. The
count triggers are dropped meanwhile, and the counts taken from the rows once at the end.

Columns come from the models, so a field added later gets its default and the load still runs.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Model

from engine import count_schema
from engine.models import Attempt, Execution, Step

SPREAD = timedelta(days=7)
# Executions created this recently are still running (the rest have ended); in the busy last
# hour, of short executions, only the last minute's.
RUNNING_WINDOW = timedelta(minutes=10)
BUSY_RUNNING_WINDOW = timedelta(minutes=1)
BATCH = 50_000
BIG_STEPS = 10_000
MANY_ATTEMPTS = 100
BIG_VALUE_ITEMS = 1_000  # strings of 1,000 characters: about 1 MB
WORKFLOWS = (
    ("DATA_FLOW", "data_processing", 7),
    ("ORDERS", "order_flow", 2),
    ("REPORTS", "report_flow", 1),
)
ENDINGS = (("completed", 90), ("failed", 6), ("cancelled", 4))
TRACEBACK = 'Traceback (most recent call last):\n  File "ploy.py", line 12, in process\n' * 8


@dataclass(frozen=True, kw_only=True)
class Loaded:
    """What the benchmark opens: one execution of each kind, and the load's figures."""

    executions: int
    steps: int
    attempts: int
    seconds: float
    small: str  # an ordinary execution, in the middle of the history
    big: str  # BIG_STEPS steps
    retried: str  # one step of MANY_ATTEMPTS attempts
    big_values: str  # an input and a step output of about 1 MB


def uuid7_at(moment: datetime, rng: random.Random) -> uuid.UUID:
    """A UUIDv7 of `moment`, as engine ids are: ordering by id is ordering by creation."""
    ms = int(moment.timestamp() * 1000)
    value = (ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62)
    return uuid.UUID(int=value | rng.getrandbits(62))


class Writer:
    """Rows into one table: executemany on SQLite, COPY on PostgreSQL, `BATCH` at a time."""

    def __init__(self, model: type[Model], known: tuple[str, ...]) -> None:
        fields = [field for field in model._meta.concrete_fields]
        by_name = {field.attname: field for field in fields}
        missing = [name for name in known if name not in by_name]
        assert not missing, f"{model.__name__} has no column {missing}"
        extra = [field for field in fields if field.attname not in known]
        self.table = model._meta.db_table
        self.columns = [by_name[name].column for name in known] + [field.column for field in extra]
        self.tail = tuple(
            field.get_db_prep_save(field.get_default(), connection) for field in extra
        )
        self.postgres = connection.vendor == "postgresql"

    def write(self, rows: Iterable[tuple]) -> int:
        count = 0
        batch: list[tuple] = []
        for row in rows:
            batch.append(row + self.tail)
            if len(batch) >= BATCH:
                count += self._flush(batch)
                batch = []
        return count + self._flush(batch)

    def _flush(self, batch: list[tuple]) -> int:
        if not batch:
            return 0
        names = ", ".join(f'"{column}"' for column in self.columns)
        raw = connection.connection
        if self.postgres:
            with (
                raw.cursor() as cursor,
                cursor.copy(f'COPY "{self.table}" ({names}) FROM STDIN') as copy,
            ):
                for row in batch:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in self.columns)
            raw.executemany(f'INSERT INTO "{self.table}" ({names}) VALUES ({marks})', batch)
        raw.commit()
        return len(batch)


class Values:
    """Column values as each database stores them (what Django would write)."""

    def __init__(self) -> None:
        self.postgres = connection.vendor == "postgresql"
        self._json: dict[str, str] = {}

    def id(self, value: uuid.UUID) -> object:
        return value if self.postgres else value.hex

    def time(self, value: datetime | None) -> object:
        """`value` is in UTC; SQLite's column holds it as naive text, as Django writes it."""
        if value is None or self.postgres:
            return value
        return value.replace(tzinfo=None).isoformat(" ")

    def json(self, value: object) -> str | None:
        if value is None:
            return None
        if isinstance(value, dict) and len(value) < 4:  # the same few values, a million times
            key = repr(value)
            cached = self._json.get(key)
            if cached is None:
                cached = self._json[key] = json.dumps(value)
            return cached
        return json.dumps(value)


EXECUTION_COLUMNS = ("id", "binding", "workflow", "status", "input", "output", "error")
EXECUTION_COLUMNS += ("created_at", "started_at", "finished_at", "wake_at")
STEP_COLUMNS = ("id", "execution_id", "name", "position", "status", "input", "output", "retries")
STEP_COLUMNS += ("attempt_count", "failure_count", "started_at", "finished_at")
ATTEMPT_COLUMNS = ("id", "step_id", "number", "status", "error_type", "error_message")
ATTEMPT_COLUMNS += ("error_traceback", "started_at", "finished_at")


class Loader:
    def __init__(self, *, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.values = Values()
        self.executions = Writer(Execution, EXECUTION_COLUMNS)
        self.steps = Writer(Step, STEP_COLUMNS)
        self.attempts = Writer(Attempt, ATTEMPT_COLUMNS)
        self.step_ids = iter(range(1, 1 << 62))
        self.attempt_ids = iter(range(1, 1 << 62))

    def load(
        self,
        count: int,
        *,
        now: datetime,
        say: Callable[[str], None],
        busy_hour: int | None = None,
    ) -> Loaded:
        """`count` executions, of which `busy_hour` (a quarter by default) were created in the
        last hour: the traffic the "last hour" counters and the workflows page count."""
        started = time.perf_counter()
        busy = count // 4 if busy_hour is None else min(busy_hour, count)
        prepare()
        indexes = drop_indexes()
        count_schema.uninstall(connection, tables=False)  # counted in one pass at the end
        histories = list(self._history(count - busy, now))
        middle = histories[len(histories) // 2][0] if histories else None
        histories += self._busy_hour(busy, now)
        totals = self._write(histories, say)
        # Half-way through the history, as an old execution someone opens: not on the lists'
        # first pages (the API list answers inputs, and one is 1 MB).
        halfway = now - SPREAD / 2
        big = self._big(halfway)
        retried = self._retried(halfway + timedelta(seconds=10))
        big_values = self._big_values(halfway + timedelta(seconds=20))
        say(f"  rebuilding {len(indexes)} indexes")
        restore_indexes(indexes)
        count_schema.install(connection)
        finish()
        return Loaded(
            executions=totals[0] + 3,
            steps=totals[1] + BIG_STEPS + 2,
            attempts=totals[2] + BIG_STEPS + MANY_ATTEMPTS + 1,
            seconds=time.perf_counter() - started,
            small=str(middle or big),
            big=str(big),
            retried=str(retried),
            big_values=str(big_values),
        )

    def _history(self, count: int, now: datetime) -> Iterator[tuple[uuid.UUID, datetime, str]]:
        """(id, created, ending status) in creation order, ending two minutes before `now`."""
        start = now - SPREAD
        step = (SPREAD - timedelta(minutes=2)) / max(count, 1)
        endings = [status for status, weight in ENDINGS for _ in range(weight)]
        for index in range(count):
            created = start + step * index
            status = "running" if now - created < RUNNING_WINDOW else self.rng.choice(endings)
            yield uuid7_at(created, self.rng), created, status

    def _busy_hour(self, count: int, now: datetime) -> list[tuple[uuid.UUID, datetime, str]]:
        """`count` executions created over the last hour, up to half a minute ago."""
        start, span = now - timedelta(hours=1), timedelta(minutes=59, seconds=30)
        endings = [status for status, weight in ENDINGS for _ in range(weight)]
        rows = []
        for index in range(count):
            created = start + span * index / count
            running = now - created < BUSY_RUNNING_WINDOW
            status = "running" if running else self.rng.choice(endings)
            rows.append((uuid7_at(created, self.rng), created, status))
        return rows

    def add_busy_hour(self, count: int, *, now: datetime, say: Callable[[str], None]) -> int:
        """Into an already loaded database: `count` more executions (and their step and
        attempt) created in the last hour. The counts are taken again from the rows."""
        self.step_ids = iter(range(_next_id(Step), 1 << 62))
        self.attempt_ids = iter(range(_next_id(Attempt), 1 << 62))
        counted = not count_schema.missing(connection)  # else a later migrate counts them
        if counted:
            count_schema.uninstall(connection, tables=False)
        written = self._write(self._busy_hour(count, now), say)[0]
        if counted:
            count_schema.install(connection)
        finish()
        return written

    def _write(self, histories: list, say: Callable[[str], None]) -> tuple[int, int, int]:
        """Executions, then their steps, then their attempts: each table in one pass."""
        flows = [flow for flow in WORKFLOWS for _ in range(flow[2])]
        chosen = [self.rng.choice(flows) for _ in histories]
        step_ids = [next(self.step_ids) for _ in histories]
        executions = self.executions.write(
            self._execution_row(identity, created, status, flow)
            for (identity, created, status), flow in zip(histories, chosen, strict=True)
        )
        say(f"  {executions:,} executions")
        steps = self.steps.write(
            self._step_row(step_id, identity, created, status, index)
            for step_id, (identity, created, status), index in zip(
                step_ids, histories, range(len(histories)), strict=True
            )
        )
        say(f"  {steps:,} steps")
        attempts = self.attempts.write(
            self._attempt_row(step_id, 1, created, "completed" if status == "completed" else status)
            for step_id, (_, created, status) in zip(step_ids, histories, strict=True)
        )
        say(f"  {attempts:,} attempts")
        return executions, steps, attempts

    def _execution_row(
        self, identity: uuid.UUID, created: datetime, status: str, flow: tuple, **values: object
    ) -> tuple:
        v = self.values
        ended = status != "running"
        output = values.get("output", {"processedValue": 42} if status == "completed" else None)
        error = {"type": "StepFailed", "message": "step 'process' failed", "traceback": TRACEBACK}
        return (
            v.id(identity),
            flow[0],
            flow[1],
            status,
            v.json(values.get("input", {"action": "double", "value": 21})),
            v.json(output),
            v.json(error if status == "failed" else None),
            v.time(created),
            v.time(created + timedelta(milliseconds=5)),
            v.time(created + timedelta(milliseconds=50)) if ended else None,
            None if ended else v.time(created),
        )

    def _step_row(
        self,
        step_id: int,
        execution: uuid.UUID,
        created: datetime,
        status: str,
        position: int = 0,
        *,
        name: str = "process",
        attempts: int = 1,
        output: object = None,
    ) -> tuple:
        v = self.values
        del position  # every history execution has one step, at position 0
        ended = status != "running"
        step_status = {"completed": "completed", "failed": "failed"}.get(status, status)
        if step_status == "completed" and output is None:
            output = {"processedValue": 42}
        return (
            step_id,
            v.id(execution),
            name,
            0,
            step_status,
            v.json({"value": 21}),
            v.json(output),
            3,
            attempts,
            attempts - 1 if step_status == "completed" else attempts,
            v.time(created + timedelta(milliseconds=10)),
            v.time(created + timedelta(milliseconds=40)) if ended else None,
        )

    def _attempt_row(self, step_id: int, number: int, created: datetime, status: str) -> tuple:
        v = self.values
        status = status if status in ("completed", "failed", "running") else "completed"
        failed = status == "failed"
        ended = status != "running"
        return (
            next(self.attempt_ids),
            step_id,
            number,
            status,
            "ValueError" if failed else "",
            f"attempt {number} failed" if failed else "",
            TRACEBACK if failed else "",
            v.time(created + timedelta(milliseconds=10 + number)),
            v.time(created + timedelta(milliseconds=11 + number)) if ended else None,
        )

    def _one(self, created: datetime, **values: object) -> uuid.UUID:
        identity = uuid7_at(created, self.rng)
        self.executions.write(
            [self._execution_row(identity, created, "completed", WORKFLOWS[0], **values)]
        )
        return identity

    def _big(self, created: datetime) -> uuid.UUID:
        """BIG_STEPS steps of one attempt each."""
        identity = self._one(created)
        v = self.values
        ids = [next(self.step_ids) for _ in range(BIG_STEPS)]
        self.steps.write(
            (
                step_id,
                v.id(identity),
                f"step-{position:05d}",
                position,
                "completed",
                None,
                v.json({"n": position}),
                3,
                1,
                0,
                v.time(created + timedelta(milliseconds=10 + position)),
                v.time(created + timedelta(milliseconds=11 + position)),
            )
            for position, step_id in enumerate(ids)
        )
        self.attempts.write(
            self._attempt_row(step_id, 1, created + timedelta(milliseconds=position), "completed")
            for position, step_id in enumerate(ids)
        )
        return identity

    def _retried(self, created: datetime) -> uuid.UUID:
        """One step that took MANY_ATTEMPTS attempts: all failed but the last."""
        identity = self._one(created)
        step_id = next(self.step_ids)
        self.steps.write(
            [self._step_row(step_id, identity, created, "completed", attempts=MANY_ATTEMPTS)]
        )
        self.attempts.write(
            self._attempt_row(
                step_id, number, created, "completed" if number == MANY_ATTEMPTS else "failed"
            )
            for number in range(1, MANY_ATTEMPTS + 1)
        )
        return identity

    def _big_values(self, created: datetime) -> uuid.UUID:
        big = {"rows": ["x" * 1000 for _ in range(BIG_VALUE_ITEMS)]}
        identity = self._one(created, input=big, output={"rows": len(big["rows"])})
        step_id = next(self.step_ids)
        self.steps.write([self._step_row(step_id, identity, created, "completed", output=big)])
        self.attempts.write([self._attempt_row(step_id, 1, created, "completed")])
        return identity


def _next_id(model: type[Model]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT COALESCE(MAX(id), 0) + 1 FROM "{model._meta.db_table}"')
        return int(cursor.fetchone()[0])


def prepare() -> None:
    """Loading settings on SQLite (the file is thrown away): no fsync, no journal, a big page
    cache, so the indexes are written once per page rather than once per row."""
    connection.ensure_connection()
    if connection.vendor == "sqlite":
        raw = connection.connection
        raw.execute("PRAGMA journal_mode=OFF")
        raw.execute("PRAGMA synchronous=OFF")
        raw.execute("PRAGMA cache_size=-1000000")


TABLES = (Execution._meta.db_table, Step._meta.db_table, Attempt._meta.db_table)


def drop_indexes() -> list[str]:
    """SQLite: the secondary indexes go while the rows go in, and are built once at the end
    (a sort instead of a million index insertions). Their DDL, to build them again."""
    if connection.vendor != "sqlite":
        return []
    raw = connection.connection
    marks = ", ".join("?" for _ in TABLES)
    rows = raw.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        f"AND tbl_name IN ({marks})",
        TABLES,
    ).fetchall()
    for name, _ in rows:
        raw.execute(f'DROP INDEX "{name}"')
    return [sql for _, sql in rows]


def restore_indexes(statements: list[str]) -> None:
    raw = connection.connection
    for statement in statements:
        raw.execute(statement)
    if statements:
        raw.commit()


def finish() -> None:
    """PostgreSQL: the sequences past the ids written, and the statistics autovacuum would
    gather. SQLite keeps none by default, as a deployment's file has none."""
    if connection.vendor != "postgresql":
        connection.connection.execute("PRAGMA journal_mode=WAL")
        return
    with connection.cursor() as cursor:
        for model in (Step, Attempt):
            table = model._meta.db_table
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f'(SELECT COALESCE(MAX(id), 1) FROM "{table}"))'
            )
        cursor.execute("ANALYZE")
