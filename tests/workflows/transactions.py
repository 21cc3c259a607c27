"""Workflows of the transaction-step tests. `ledger` writes two entries of a ledger in one
`step.transaction`, on the `env` database binding `DB` or on Django's own database, between a
step before and a step after. Every point it passes is noted in a file per execution, and it
stops at the point a control file names (`middle`, or `middle@2` for the second time it gets
there), so that a test can kill the worker right there."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

LEDGER_TABLE = "ledger"
CREATE_LEDGER = (
    f"CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} "
    "(execution_id TEXT NOT NULL, entry TEXT NOT NULL, pid INTEGER NOT NULL)"
)
PAUSE_LIMIT_SECONDS = 60  # the test kills the process long before


class Note(NamedTuple):
    point: str
    pid: int
    at: float


def notes_dir() -> Path:
    path = Path(os.environ["PLOY_DATA_DIR"]) / "transactions"
    path.mkdir(parents=True, exist_ok=True)
    return path


def note(execution_id: str, point: str) -> None:
    with open(notes_dir() / f"{execution_id}.log", "a") as handle:
        handle.write(f"{point} {os.getpid()} {time.time():.6f}\n")


def notes(execution_id: str, point: str | None = None) -> list[Note]:
    path = notes_dir() / f"{execution_id}.log"
    found = []
    for line in path.read_text().splitlines() if path.exists() else []:
        name, pid, at = line.split(" ")
        if point is None or name == point:
            found.append(Note(name, int(pid), float(at)))
    return found


def control(execution_id: str) -> Path:
    return notes_dir() / f"{execution_id}.pause"


def pause_at(execution_id: str, point: str) -> None:
    """Stop here until the control file goes (or the process is killed)."""
    control(execution_id).write_text(point)


def go_on(execution_id: str) -> None:
    control(execution_id).unlink(missing_ok=True)


def point(execution_id: str, name: str) -> None:
    """Note `name`; stop there if the control file names it and this is the time it names."""
    note(execution_id, name)
    path = control(execution_id)
    wanted = path.read_text().strip() if path.exists() else ""
    target, _, time_number = wanted.partition("@")
    if target != name or len(notes(execution_id, name)) != int(time_number or 1):
        return
    deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def write_entry(database: object, execution_id: str, entry: str) -> None:
    """One ledger row, through the binding (`?`) or Django's connection alias (`%s`)."""
    if isinstance(database, str):
        from django.db import connections

        with connections[database].cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {LEDGER_TABLE} (execution_id, entry, pid) VALUES (%s, %s, %s)",
                [execution_id, entry, os.getpid()],
            )
        return
    database.prepare(
        f"INSERT INTO {LEDGER_TABLE} (execution_id, entry, pid) VALUES (?, ?, ?)"
    ).bind(execution_id, entry, os.getpid()).run()


def ledger(*, input, step, execution_id):
    """`before`, the transaction `write` (two entries; `fail_first` makes its first attempt
    raise after the first entry; `hold_ms` spaces the entries), then `after`. Its notes are
    kept under `key` (a test picks it before the execution exists), else under its id."""
    key = input.get("key") or execution_id

    def before():
        point(key, "before")
        return "before"

    def write(database):
        point(key, "begin")
        write_entry(database, execution_id, "first")
        point(key, "middle")
        time.sleep(input.get("hold_ms", 0) / 1000)
        if input.get("fail_first") and len(notes(key, "middle")) == 1:
            raise RuntimeError("the first attempt fails after its first entry")
        write_entry(database, execution_id, "second")
        point(key, "end")
        return {"entries": 2, "pid": os.getpid()}

    def after():
        point(key, "after")
        if input.get("after_fails") and len(notes(key, "after")) == 1:
            raise RuntimeError("the first attempt of `after` fails")
        return "after"

    step.run("before", before)
    written = step.transaction("write", write, db=input.get("db"))
    step.run("after", after)
    return written


def transaction_misuse(*, input, step, execution_id):
    """The ways to misuse step.transaction, one per `kind`."""
    kind = input["kind"]
    if kind == "unknown_db":
        return step.transaction("t", lambda db: 1, db="NOPE")
    if kind == "nested":
        return step.transaction("t", lambda db: step.run("inner", lambda: 1), db=input.get("db"))
    if kind == "twice":
        step.transaction("t", lambda db: 1, db=input.get("db"))
        return step.transaction("t", lambda db: 2, db=input.get("db"))
    if kind == "renamed":  # its name comes from the input, which the test rewrites
        step.transaction(input["name"], lambda db: 1, db=input.get("db"))
        step.sleep(1000)
        return "done"
    if kind == "not_json":
        return step.transaction("t", lambda db: object(), db=input.get("db"))
    raise ValueError(kind)


def engine_fails_after(*, input, step, execution_id):
    """The transaction's body turns Django's connection read-only on its first call: the
    engine's write that completes the step fails (as if the worker died right there)."""

    def write(database):
        note(execution_id, "body")
        write_entry(database, execution_id, "only")
        if len(notes(execution_id, "body")) == 1:
            from django.db import connection

            connection.cursor().execute("PRAGMA query_only = ON")
        return {"body": len(notes(execution_id, "body"))}

    return step.transaction("write", write, db=input.get("db"))


def committed_elsewhere(*, input, step, execution_id):
    """While its first attempt runs, another one commits the step on a second connection
    (PostgreSQL only: SQLite would wait on the first one's lock)."""

    def write(database):
        note(execution_id, "body")
        write_entry(database, execution_id, "loser")
        if len(notes(execution_id, "body")) == 1:
            import psycopg

            with psycopg.connect(database.url, autocommit=True) as other:
                other.execute(
                    "INSERT INTO ploy_internal_step_outputs (execution_id, step_name, epoch, "
                    "attempt, output, committed_at) VALUES (%s, 'write', 0, 7, %s, 'now')",
                    (execution_id, '{"winner": "the other attempt"}'),
                )
        return {"winner": "this attempt"}

    return step.transaction("write", write, db="DB")


workflows = {
    "committed_elsewhere": {"handler": committed_elsewhere},
    "ledger": {"handler": ledger},
    "transaction_misuse": {"handler": transaction_misuse},
    "engine_fails_after": {"handler": engine_fails_after},
}
