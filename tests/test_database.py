"""`env.DB`: Ploy's database binding on SQLite files, and its SQL migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from engine.bindings import current_env
from engine.config import load_config
from engine.database import MIGRATIONS_TABLE, Database, apply_migrations, databases_of
from engine.errors import ConfigError


def make_database(tmp_path: Path, files: dict[str, str]) -> Database:
    folder = tmp_path / "migrations"
    folder.mkdir(exist_ok=True)
    for name, sql in files.items():
        (folder / name).write_text(sql)
    return Database(binding="DB", path=tmp_path / "data" / "db.sqlite3", migrations=folder)


def test_prepare_bind_run_all_first(tmp_path):
    db = make_database(
        tmp_path,
        {
            "0001_items.sql": "CREATE TABLE items (id INTEGER PRIMARY "
            "KEY, name TEXT NOT NULL, price NUMERIC);"
        },
    )
    result = db.prepare("INSERT INTO items (name, price) VALUES (?, ?)").bind("tea", 3).run()
    assert result == {"success": True, "meta": {"changes": 1, "last_row_id": 1}}
    db.prepare("INSERT INTO items (name, price) VALUES (?, ?)").bind("cake", 4.5).run()
    assert db.prepare("SELECT name, price FROM items ORDER BY id").all() == {
        "success": True,
        "results": [{"name": "tea", "price": 3}, {"name": "cake", "price": 4.5}],
    }
    assert db.prepare("SELECT name FROM items WHERE price > ?").bind(4).first() == {"name": "cake"}
    assert db.prepare("SELECT name FROM items WHERE price > ?").bind(4).first("name") == "cake"
    assert db.prepare("SELECT name FROM items WHERE price > ?").bind(99).first() is None


def test_parameters_are_bound_never_formatted(tmp_path):
    db = make_database(tmp_path, {"0001.sql": "CREATE TABLE notes (body TEXT);"})
    hostile = "x'); DROP TABLE notes; --"
    db.prepare("INSERT INTO notes (body) VALUES (?)").bind(hostile).run()
    assert db.prepare("SELECT body FROM notes").first("body") == hostile


def test_exec_runs_several_statements(tmp_path):
    db = make_database(tmp_path, {})
    db.exec("CREATE TABLE a (x); CREATE TABLE b (y); INSERT INTO a VALUES (1);")
    assert db.prepare("SELECT count(*) AS n FROM a").first("n") == 1


def test_migrations_apply_once_each_in_file_name_order(tmp_path):
    db = make_database(
        tmp_path,
        {
            "0002_more.sql": "ALTER TABLE t ADD COLUMN b TEXT;",
            "0001_t.sql": "CREATE TABLE t (a TEXT);",
        },
    )
    assert db.migrate() == ["0001_t.sql", "0002_more.sql"]
    (tmp_path / "migrations" / "0003_c.sql").write_text("ALTER TABLE t ADD COLUMN c TEXT;")
    assert apply_migrations(db.path, db.migrations) == ["0003_c.sql"]
    assert apply_migrations(db.path, db.migrations) == []
    with sqlite3.connect(db.path) as connection:
        rows = connection.execute(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY name").fetchall()
        columns = [row[1] for row in connection.execute("PRAGMA table_info(t)")]
    assert [row[0] for row in rows] == ["0001_t.sql", "0002_more.sql", "0003_c.sql"]
    assert columns == ["a", "b", "c"]


def test_a_failing_migration_applies_nothing_and_names_the_file(tmp_path):
    db = make_database(tmp_path, {"0001_bad.sql": "CREATE TABLE ok (a);\nCREATE TABLEX nope;"})
    with pytest.raises(ConfigError, match="0001_bad.sql: SQL migration failed: .*syntax error"):
        db.migrate()
    with sqlite3.connect(db.path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert "ok" not in tables  # rolled back whole


def test_several_databases_use_a_migrations_folder_each(tmp_path, settings):
    settings.PLOY_DATA_DIR = tmp_path / "data"
    (tmp_path / "ploy.py").write_text("workflows = {}\n")
    (tmp_path / "ploy.yaml").write_text("db:\n  USERS: users\n  ORDERS: orders\n")
    for binding, table in (("USERS", "people"), ("ORDERS", "orders")):
        (tmp_path / "migrations" / binding).mkdir(parents=True)
        (tmp_path / "migrations" / binding / "0001.sql").write_text(f"CREATE TABLE {table} (x);")
    databases = databases_of(load_config(tmp_path / "ploy.yaml"))
    assert databases["USERS"].path == tmp_path / "data" / "db" / "users.sqlite3"
    databases["USERS"].prepare("INSERT INTO people VALUES (1)").run()
    databases["ORDERS"].prepare("INSERT INTO orders VALUES (2)").run()
    with pytest.raises(sqlite3.OperationalError, match="no such table: orders"):
        databases["USERS"].prepare("SELECT * FROM orders").all()


@pytest.mark.django_db
def test_env_exposes_the_bindings_and_names_unknown_ones():
    env = current_env()
    assert env.DB.prepare("SELECT count(*) AS n FROM results").first("n") >= 0
    assert env.DATA_FLOW.config.name == "data_processing"
    with pytest.raises(AttributeError, match="env has no binding 'NOPE' \\(ploy.yaml defines: "):
        env.NOPE  # noqa: B018
    assert "DATA_FLOW" in dir(env) and "DB" in dir(env)
