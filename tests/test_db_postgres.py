"""`env.DB` on PostgreSQL (`DB: {url: ...}` / `{url_env: ...}`): the SQLite binding's API and
shapes, its migrations (once, however many hosts start at once), a connection per thread.

The tests that need PostgreSQL (127.0.0.1:5432) are skipped, with the reason, without it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import server_database
from engine.config import load_config
from engine.database import MIGRATIONS_TABLE, Database, databases_of
from engine.errors import ConfigError
from engine.server_database import PostgresDatabase, redacted
from tests.conftest import ROOT, worker_environment
from tests.test_scaleout import POSTGRES, reachable

needs_postgres = pytest.mark.skipif(
    not reachable(5432), reason="PostgreSQL is not reachable on 127.0.0.1:5432"
)


@contextmanager
def fresh_postgres(prefix: str = "ployweb_db") -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; its URL. Dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres() as url:
        yield url


def migrations(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir(exist_ok=True)
    for name, sql in files.items():
        (folder / name).write_text(sql)
    return folder


ITEMS = {
    "0001_items.sql": "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "price NUMERIC);"
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=needs_postgres)])
def make_database(request, tmp_path) -> Iterator[Callable[[dict[str, str]], Database]]:
    """The same binding on either back end, so each test runs on both."""
    with fresh_postgres() if request.param == "postgres" else _nothing() as url:

        def make(files: dict[str, str]) -> Database:
            folder = migrations(tmp_path, files)
            if url is None:
                return Database(binding="DB", path=tmp_path / "db.sqlite3", migrations=folder)
            return PostgresDatabase(binding="DB", url=url, migrations=folder)

        yield make


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


# --- the same API and shapes on both back ends ------------------------------------------------


def test_prepare_bind_run_all_first_answer_the_same_shapes(make_database):
    db = make_database(ITEMS)
    insert = "INSERT INTO items (id, name, price) VALUES (?, ?, ?)"
    assert db.prepare(insert).bind(1, "tea", 3).run()["meta"]["changes"] == 1
    db.prepare(insert).bind(2, "cake", 4.5).run()
    assert db.prepare("SELECT name, price FROM items ORDER BY id").all() == {
        "success": True,
        "results": [{"name": "tea", "price": 3}, {"name": "cake", "price": 4.5}],
    }
    assert db.prepare("SELECT name FROM items WHERE price > ?").bind(4).first() == {"name": "cake"}
    assert db.prepare("SELECT name FROM items WHERE price > ?").bind(4).first("name") == "cake"
    assert db.prepare("SELECT name FROM items WHERE price > ?").bind(99).first() is None
    assert db.prepare("UPDATE items SET price = price + ?").bind(1).run()["meta"]["changes"] == 2
    assert db.prepare("DELETE FROM items WHERE id = ?").bind(9).all() == {
        "success": True,
        "results": [],
    }


def test_quotes_comments_and_percent_signs_are_left_alone(make_database):
    db = make_database(ITEMS)
    db.prepare("INSERT INTO items (id, name) VALUES (?, ?)").bind(1, "50% off?").run()
    row = db.prepare(
        "SELECT name, '?' AS mark, 'it''s %' AS quote /* a ? here */ FROM items "
        "WHERE name LIKE '%off%' AND id = ? -- and one ? there\n"
    ).bind(1)
    assert row.first() == {"name": "50% off?", "mark": "?", "quote": "it's %"}


def test_parameters_are_bound_never_formatted(make_database):
    db = make_database({"0001.sql": "CREATE TABLE notes (body TEXT);"})
    hostile = "x'); DROP TABLE notes; -- ? %s %%"
    db.prepare("INSERT INTO notes (body) VALUES (?)").bind(hostile).run()
    assert db.prepare("SELECT body FROM notes").first("body") == hostile


def test_exec_runs_several_statements(make_database):
    db = make_database({})
    db.exec("CREATE TABLE a (x INTEGER); CREATE TABLE b (y TEXT); INSERT INTO a VALUES (1);")
    db.exec("INSERT INTO b VALUES ('100%');")
    assert db.prepare("SELECT count(*) AS n FROM a").first("n") == 1
    assert db.prepare("SELECT y FROM b").first("y") == "100%"


def test_a_transaction_commits_whole_or_not_at_all(make_database):
    db = make_database(ITEMS)
    with db.transaction():
        db.prepare("INSERT INTO items (id, name) VALUES (?, ?)").bind(1, "kept").run()
        db.exec("INSERT INTO items (id, name) VALUES (2, 'also kept');")
    with pytest.raises(ZeroDivisionError), db.transaction():
        db.prepare("INSERT INTO items (id, name) VALUES (?, ?)").bind(3, "gone").run()
        db.exec("INSERT INTO items (id, name) VALUES (4, 'gone too');")
        1 / 0  # noqa: B018
    names = db.prepare("SELECT name FROM items ORDER BY id").all()["results"]
    assert names == [{"name": "kept"}, {"name": "also kept"}]


def test_migrations_apply_once_each_in_file_name_order(make_database, tmp_path):
    db = make_database(
        {
            "0002_more.sql": "ALTER TABLE t ADD COLUMN b TEXT;",
            "0001_t.sql": "CREATE TABLE t (a TEXT);",
        }
    )
    assert db.migrate() == ["0001_t.sql", "0002_more.sql"]
    assert db.migrate() == []
    rows = db.prepare(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY name").all()["results"]
    assert [row["name"] for row in rows] == ["0001_t.sql", "0002_more.sql"]
    db.prepare("INSERT INTO t (a, b) VALUES (?, ?)").bind("x", "y").run()


def test_a_failing_migration_applies_nothing_and_names_the_file(make_database):
    db = make_database({"0001_bad.sql": "CREATE TABLE ok (a TEXT);\nCREATE TABLEX nope;"})
    with pytest.raises(ConfigError, match=r"0001_bad.sql: SQL migration failed: .*syntax error"):
        db.migrate()
    fresh = make_database({"0001_bad.sql": "CREATE TABLE ok (a TEXT);"})
    assert fresh.migrate() == ["0001_bad.sql"]  # the first try left no table `ok` behind


# --- PostgreSQL only ---------------------------------------------------------------------------


@needs_postgres
def test_hosts_starting_at_once_apply_each_migration_once(postgres_url, tmp_path):
    """Eight processes' worth of bindings migrate at the same moment: a file that cannot run
    twice (CREATE TABLE, an INSERT counted) runs once."""
    folder = migrations(
        tmp_path,
        {
            "0001.sql": "CREATE TABLE runs (n INTEGER);",
            "0002.sql": "INSERT INTO runs VALUES (1); SELECT pg_sleep(0.2);",
        },
    )
    bindings = [
        PostgresDatabase(binding="DB", url=postgres_url, migrations=folder) for _ in range(8)
    ]
    barrier = threading.Barrier(len(bindings))
    applied: list[list[str]] = []
    errors: list[BaseException] = []

    def start(binding: PostgresDatabase) -> None:
        barrier.wait()
        try:
            applied.append(binding.migrate())
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=start, args=(binding,)) for binding in bindings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(applied, key=len) == [[]] * 7 + [["0001.sql", "0002.sql"]]
    assert bindings[0].prepare("SELECT count(*) AS n FROM runs").first("n") == 1


@needs_postgres
def test_each_thread_keeps_one_connection_and_a_dropped_one_is_replaced(
    postgres_url, tmp_path, monkeypatch
):
    db = PostgresDatabase(binding="DB", url=postgres_url, migrations=None)
    first = db.connection()
    assert db.connection() is first
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(db.connection()))
    thread.start()
    thread.join()
    assert other[0] is not first
    backend = db.prepare("SELECT pg_backend_pid() AS pid").first("pid")
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    monkeypatch.setattr(server_database, "IDLE_CHECK_SECONDS", 0.0)
    assert db.prepare("SELECT ? AS n").bind(7).first("n") == 7  # checked, replaced, run
    assert db.prepare("SELECT pg_backend_pid() AS pid").first("pid") != backend


@needs_postgres
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    text=st.text(alphabet="?%'\"$-*/\\ ab\n;", max_size=20),
    value=st.integers(min_value=-(10**9), max_value=10**9),
)
def test_any_literal_round_trips_beside_a_bound_parameter(shared_postgres, text, value):
    """Whatever a string constant holds, quoted the standard way or with dollars, it comes back
    as written and the `?` beside it is the bound value."""
    quoted = "'" + text.replace("'", "''") + "'"
    dollar = f"$q${text}$q$" if "$q" not in text and not text.endswith("$") else quoted
    sql = f"SELECT {quoted} AS a, ? AS b, {dollar} AS c /* ? */"
    row = shared_postgres.prepare(sql).bind(value).first()
    assert row == {"a": text, "b": value, "c": text}


@pytest.fixture(scope="module")
def shared_postgres() -> Iterator[PostgresDatabase]:
    if not reachable(5432):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with fresh_postgres() as url:
        db = PostgresDatabase(binding="DB", url=url, migrations=None)
        yield db
        db.connection().close()


@needs_postgres
def test_manage_migrate_applies_the_binding_migrations_from_url_env(postgres_url, tmp_path):
    (tmp_path / "ploy.py").write_text("workflows = {}\n")
    (tmp_path / "ploy.yaml").write_text("db:\n  DB: {url_env: APP_DATABASE_URL}\n")
    migrations(tmp_path, {"0001_results.sql": "CREATE TABLE results (n INTEGER);"})
    environment = worker_environment(
        PLOY_CONFIG=str(tmp_path / "ploy.yaml"),
        APP_DATABASE_URL=postgres_url,
        PLOY_DATA_DIR=str(tmp_path / "data"),
    )
    environment.pop("DATABASE_URL", None)  # a fresh SQLite file for Django's own tables
    command = [sys.executable, str(ROOT / "manage.py"), "migrate"]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Applied DB migration 0001_results.sql" in done.stdout
    with psycopg.connect(postgres_url) as connection:
        assert connection.execute(f"SELECT name FROM {MIGRATIONS_TABLE}").fetchall() == [
            ("0001_results.sql",)
        ]


# --- ploy.yaml: the url and url_env forms ------------------------------------------------------


def config(tmp_path: Path, db: str, environ: dict[str, str] | None = None):
    (tmp_path / "ploy.py").write_text("workflows = {}\n")
    (tmp_path / "ploy.yaml").write_text(f"db:\n  DB: {db}\n")
    return load_config(tmp_path / "ploy.yaml", environ=environ or {})


def test_url_and_url_env_name_a_postgres_binding(tmp_path):
    by_url = config(tmp_path, "{url: postgres://app:s3cret@db.internal:5432/app}")
    (database,) = by_url.databases
    assert database.url == "postgres://app:s3cret@db.internal:5432/app"
    assert "s3cret" not in repr(database)
    binding = databases_of(by_url)["DB"]
    assert isinstance(binding, PostgresDatabase)
    assert "s3cret" not in repr(binding) and "app:***@db.internal" in repr(binding)
    by_env = config(tmp_path, "{url_env: APP_DATABASE_URL}", {"APP_DATABASE_URL": POSTGRES})
    assert by_env.databases[0].url == POSTGRES
    assert by_env.databases[0].url_env == "APP_DATABASE_URL"


BAD_SERVER_DATABASES = [
    ("{uri: postgres://x/y}", "unknown key 'db.DB.uri' (did you mean 'url'?)"),
    ("{url: postgres://x/y, url_env: X}", "db.DB needs exactly one of url"),
    ("{}", "db.DB needs exactly one of url (postgres://user@host:5432/name) or url_env"),
    ("{url_env: MISSING_URL}", "db.DB.url_env: the environment variable MISSING_URL is not set"),
    ("{url_env: 'not a name'}", "db.DB.url_env must be the name of an environment variable"),
    ("{url: 5}", "db.DB.url must be a URL such as postgres://"),
    (
        "{url: 'mysql://root:hunter2@h/db'}",
        "db.DB.url: unsupported database URL (the scheme 'mysql'): use postgres://",
    ),
    ("{url: 'just-a-name'}", "db.DB.url: unsupported database URL (no scheme)"),
    (
        "{url_env: BAD_URL}",
        "db.DB.url_env (BAD_URL): unsupported database URL (the scheme 'http')",
    ),
    ("{url: 'postgres://u:hunter2@h/db?sslmode=maybe&x=1&&'}", None),
]


@pytest.mark.parametrize(("db", "message"), BAD_SERVER_DATABASES)
def test_bad_server_databases_are_refused_in_one_line_without_the_password(tmp_path, db, message):
    environ = {"BAD_URL": "http://u:hunter2@h/db"}
    if message is None:  # libpq refuses it: the message says so, without quoting the URL
        message = "db.DB.url: not a valid PostgreSQL URL: fix it"
    with pytest.raises(ConfigError) as refused:
        config(tmp_path, db, environ)
    text = str(refused.value)
    assert message in text
    assert "hunter2" not in text and "\n" not in text


def test_redacted_hides_only_the_password():
    assert redacted("postgres://app:pw@h:5432/db") == "postgres://app:***@h:5432/db"
    assert redacted("postgres://app@h/db") == "postgres://app@h/db"


@needs_postgres
def test_a_transaction_left_idle_past_the_worker_timeout_is_ended_by_the_server(
    postgres_url, settings
):
    """A worker frozen inside a step's transaction must not hold its locks for ever: past the
    worker timeout the server ends the session, the transaction rolls back."""
    settings.PLOY_WORKER_TIMEOUT_SECONDS = 0.5
    db = PostgresDatabase(binding="DB", url=postgres_url, migrations=None)
    db.exec("CREATE TABLE t (x INTEGER)")
    with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout), db.transaction():
        db.prepare("INSERT INTO t VALUES (?)").bind(1).run()
        time.sleep(1.5)
        db.prepare("INSERT INTO t VALUES (?)").bind(2).run()
    assert db.prepare("SELECT count(*) AS n FROM t").first("n") == 0  # a new connection
