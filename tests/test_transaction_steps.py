"""`step.transaction`: the step's writes and its output commit together, on the `env` database
binding (SQLite, and PostgreSQL when it is reachable) and on Django's own database. Runs are
driven in this process; tests/test_transaction_faults.py kills real workers around them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from engine import registry, runtime, workers
from engine.bindings import current_env
from engine.models import Execution, Step
from engine.transactions import OUTPUTS_TABLE
from tests.test_db_postgres import fresh_postgres, needs_postgres
from tests.workflows.transactions import CREATE_LEDGER, LEDGER_TABLE, notes

pytestmark = pytest.mark.django_db(transaction=True)

TESTS = Path(__file__).resolve().parent
ON_SQLITE = ["DB", None]  # the env binding, Django's own database


@pytest.fixture(autouse=True)
def ledgers() -> None:
    """The ledger table in Django's database and in the binding's."""
    with connection.cursor() as cursor:
        cursor.execute(CREATE_LEDGER)
    current_env().DB.exec(CREATE_LEDGER)


@pytest.fixture
def postgres_binding(tmp_path: Path) -> Iterator[None]:
    """The test workflows with `DB: {url: ...}` on a fresh PostgreSQL database."""
    if needs_postgres.args[0]:
        pytest.skip(needs_postgres.kwargs["reason"])
    with fresh_postgres("ployweb_tx") as url:
        source = (TESTS / "workflows" / "ploy.yaml").read_text()
        text = source.replace("main: app.py", f"main: {TESTS / 'workflows' / 'app.py'}")
        (tmp_path / "ploy.yaml").write_text(text.replace("  DB: default", f"  DB: {{url: {url}}}"))
        postgres_migrations(tmp_path / "migrations")
        registry.load(tmp_path / "ploy.yaml")
        current_env().DB.exec(CREATE_LEDGER)
        try:
            yield
        finally:
            current_env().DB.close()
            registry.load()


def postgres_migrations(folder: Path) -> None:
    """The example's migration in PostgreSQL's dialect (SQL files are the database's own
    SQL: SQLite's AUTOINCREMENT is PostgreSQL's identity column)."""
    folder.mkdir()
    (folder / "0001_results.sql").write_text(POSTGRES_RESULTS)


POSTGRES_RESULTS = """CREATE TABLE results (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action TEXT NOT NULL,
    input NUMERIC NOT NULL,
    output NUMERIC NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""


def start(binding: str, input: object = None) -> str:
    return runtime.trigger(binding, input).execution_id


def run(execution_id: str, after: float = 0) -> Execution:
    runtime.run_execution(execution_id, now=timezone.now() + timedelta(seconds=after))
    return Execution.objects.get(id=execution_id)


def entries(execution_id: str, db: str | None) -> list[str]:
    sql = f"SELECT entry FROM {LEDGER_TABLE} WHERE execution_id = ? ORDER BY entry"
    if db is not None:
        rows = current_env().DB.prepare(sql).bind(execution_id).all()["results"]
        return [row["entry"] for row in rows]
    with connection.cursor() as cursor:
        cursor.execute(sql.replace("?", "%s"), [execution_id])
        return [row[0] for row in cursor.fetchall()]


def stored_outputs(execution_id: str) -> list[tuple[int, str]]:
    rows = (
        current_env()
        .DB.prepare(f"SELECT attempt, output FROM {OUTPUTS_TABLE} WHERE execution_id = ?")
        .bind(execution_id)
    )
    return [(row["attempt"], row["output"]) for row in rows.all()["results"]]


def attempts(execution_id: str, name: str) -> list[tuple[int, str, str]]:
    step = Step.objects.get(execution_id=execution_id, name=name)
    return [(a.number, a.status, a.error_type) for a in step.attempts.order_by("number")]


def check_ledger_once(db: str | None) -> None:
    execution_id = start("LEDGER", {"db": db})
    execution = run(execution_id)
    assert execution.status == "completed", execution.error
    assert execution.output["entries"] == 2
    assert entries(execution_id, db) == ["first", "second"]
    step = Step.objects.get(execution_id=execution_id, name="write")
    assert step.status == "completed" and step.output == execution.output
    assert attempts(execution_id, "write") == [(1, "completed", "")]
    if db is not None:
        (stored,) = stored_outputs(execution_id)
        assert stored[0] == 1 and '"entries": 2' in stored[1]


@pytest.mark.parametrize("db", ON_SQLITE)
def test_the_writes_and_the_output_commit_together(db):
    check_ledger_once(db)


@pytest.mark.parametrize("db", ON_SQLITE)
def test_a_failing_attempt_rolls_back_its_writes_and_is_retried(db):
    execution_id = start("LEDGER", {"db": db, "fail_first": True})
    assert run(execution_id).status == "running"  # waiting for its retry
    assert entries(execution_id, db) == []  # the first entry rolled back with the attempt
    execution = run(execution_id, after=2)
    assert execution.status == "completed"
    assert entries(execution_id, db) == ["first", "second"]
    assert attempts(execution_id, "write") == [(1, "failed", "RuntimeError"), (2, "completed", "")]


@pytest.mark.parametrize("db", ON_SQLITE)
def test_a_replay_returns_the_stored_output_without_calling_fn(db):
    execution_id = start("LEDGER", {"db": db, "after_fails": True})
    assert run(execution_id).status == "running"  # `after` waits for its retry
    execution = run(execution_id, after=2)
    assert execution.status == "completed"
    assert len(notes(execution_id, "begin")) == 1
    assert entries(execution_id, db) == ["first", "second"]


def test_a_commit_the_engine_did_not_record_completes_the_step_on_the_next_run():
    """The binding committed, then the engine's own write failed (as if the worker died right
    there): the next run completes the step from the binding's row, without calling fn."""
    execution_id = start("ENGINE_FAILS_AFTER", {"db": "DB"})
    try:
        assert run(execution_id).status == "running"
    finally:
        connection.cursor().execute("PRAGMA query_only = OFF")
    assert Step.objects.get(execution_id=execution_id, name="write").status == "running"
    assert [attempt for attempt, _ in stored_outputs(execution_id)] == [1]
    workers.current().retry_releases()
    execution = run(execution_id)
    assert execution.status == "completed" and execution.output == {"body": 1}
    assert len(notes(execution_id, "body")) == 1
    assert entries(execution_id, "DB") == ["only"]
    assert attempts(execution_id, "write") == [(1, "completed", "")]


def test_on_djangos_database_a_failed_completion_rolls_the_writes_back():
    execution_id = start("ENGINE_FAILS_AFTER", {"db": None})
    try:
        assert run(execution_id).status == "running"
    finally:
        connection.cursor().execute("PRAGMA query_only = OFF")
    assert entries(execution_id, None) == []  # rolled back with the step's completion
    workers.current().retry_releases()
    execution = run(execution_id)
    assert execution.status == "completed" and execution.output == {"body": 2}
    assert entries(execution_id, None) == ["only"]
    assert attempts(execution_id, "write") == [(1, "failed", "WorkerLost"), (2, "completed", "")]


MISUSES = [
    ("unknown_db", "ValueError", "db='NOPE' is not a database binding of ploy.yaml"),
    ("nested", "StepFailed", "was called inside step 't': steps cannot be nested"),
    ("twice", "StepMisuse", "step name 't' is used twice in this execution"),
    ("not_json", "StepFailed", "is not JSON-serialisable"),
]


@pytest.mark.parametrize("db", ON_SQLITE)
@pytest.mark.parametrize(("kind", "error_type", "message"), MISUSES)
def test_misuse_fails_with_a_clear_error_and_writes_nothing(db, kind, error_type, message):
    execution = run(start("TRANSACTION_MISUSE", {"kind": kind, "db": db}))
    assert execution.status == "failed"
    assert execution.error["type"] == error_type
    assert message in execution.error["message"]


@pytest.mark.parametrize("db", ON_SQLITE)
def test_a_transaction_step_renamed_under_a_sleeping_execution_is_a_code_change(db):
    execution_id = start("TRANSACTION_MISUSE", {"kind": "renamed", "name": "old", "db": db})
    assert run(execution_id).status == "running"  # asleep after the transaction step
    Execution.objects.filter(id=execution_id).update(
        input={"kind": "renamed", "name": "new", "db": db}
    )
    execution = run(execution_id, after=2)
    assert execution.status == "failed" and execution.error["type"] == "CodeChanged"
    assert "'old'" in execution.error["message"] and "'new'" in execution.error["message"]


@needs_postgres
@pytest.mark.usefixtures("postgres_binding")
def test_on_a_postgres_binding_the_writes_and_the_output_commit_together():
    check_ledger_once("DB")
    execution_id = start("LEDGER", {"db": "DB", "fail_first": True})
    assert run(execution_id).status == "running"
    assert entries(execution_id, "DB") == []
    assert run(execution_id, after=2).status == "completed"
    assert entries(execution_id, "DB") == ["first", "second"]


@needs_postgres
@pytest.mark.usefixtures("postgres_binding")
def test_an_attempt_that_commits_second_rolls_back_and_takes_the_first_ones_output():
    """The step committed elsewhere while this attempt ran (a worker declared dead, still
    going): this attempt's writes roll back and the step completes with the first output."""
    execution_id = start("COMMITTED_ELSEWHERE")
    execution = run(execution_id)
    assert execution.status == "completed"
    assert execution.output == {"winner": "the other attempt"}
    assert entries(execution_id, "DB") == []
    assert attempts(execution_id, "write") == [(1, "failed", "RolledBack")]
