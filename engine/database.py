"""`env.DB`: Ploy's database binding on a SQLite file per database name, with SQL migrations.

`engine.server_database` gives the same binding on PostgreSQL (`DB: {url: ...}`).
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlparse
from django.conf import settings

from engine.config import DatabaseConfig, PloyConfig
from engine.errors import ConfigError

logger = logging.getLogger(__name__)

MIGRATIONS_TABLE = "ploy_internal_db_migrations"


class PreparedStatement:
    """One SQL statement and its bound parameters; parameters are never formatted into SQL."""

    def __init__(self, database: Database, sql: str, params: Sequence[object] = ()) -> None:
        self._database = database
        self._sql = sql
        self._params = tuple(params)

    def bind(self, *params: object) -> PreparedStatement:
        return PreparedStatement(self._database, self._sql, params)

    def run(self) -> dict[str, Any]:
        cursor = self._database.execute(self._sql, self._params)
        # PostgreSQL has no last row id: None there (use RETURNING id with .first()).
        last_row_id = getattr(cursor, "lastrowid", None)
        return {"success": True, "meta": {"changes": cursor.rowcount, "last_row_id": last_row_id}}

    def all(self) -> dict[str, Any]:
        cursor = self._database.execute(self._sql, self._params)
        rows = cursor.fetchall() if cursor.description is not None else []
        return {"success": True, "results": [dict(row) for row in rows]}

    def first(self, column: str | None = None) -> object:
        cursor = self._database.execute(self._sql, self._params)
        row = cursor.fetchone() if cursor.description is not None else None
        if row is None:
            return None
        return row[column] if column is not None else dict(row)


class Database:
    """A SQLite file; one connection per thread, migrations applied on first use in a process."""

    def __init__(self, *, binding: str, path: Path, migrations: Path | None) -> None:
        self.binding = binding
        self.path = path
        self.migrations = migrations
        self._local = threading.local()
        self._migrated = False
        self._lock = threading.Lock()
        self._tables: set[str] = set()  # engine tables known to exist (create_table)

    def prepare(self, sql: str) -> PreparedStatement:
        return PreparedStatement(self, sql)

    def exec(self, sql: str) -> dict[str, Any]:
        """Run one or more statements (DDL), as Ploy's `DB.exec`."""
        connection = self.connection()
        if connection.in_transaction:
            # executescript() would COMMIT the step's transaction first: one at a time instead.
            for statement in sqlparse.split(sql):
                connection.execute(statement)
        else:
            connection.executescript(sql)
        return {"success": True}

    def execute(self, sql: str, params: Sequence[object]) -> sqlite3.Cursor:
        return self.connection().execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction on this thread's connection: every statement of this binding made
        on this thread inside it is part of it; committed at the end, rolled back on error."""
        connection = self.connection()
        if connection.in_transaction:
            raise RuntimeError(f"env.{self.binding}: a transaction is already open on this thread")
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def create_table(self, sql: str) -> None:
        """`CREATE TABLE IF NOT EXISTS ...` of a table the engine keeps in this database, run
        once per process (before the first transaction that needs it)."""
        with self._lock:
            if sql in self._tables:
                return
        self.exec(sql)
        with self._lock:
            self._tables.add(sql)

    def close(self) -> None:
        """Close this thread's connection, if it has one (the next use opens another)."""
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            self.migrate()
            connection = self._local.connection = _connect(self.path)
        return connection

    def migrate(self) -> list[str]:
        """Apply the pending SQL files, once per process; a file lock keeps processes in turn."""
        with self._lock:
            if self._migrated:
                return []
            applied = apply_migrations(self.path, self.migrations)
            self._migrated = True
            return applied


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    return connection


def apply_migrations(path: Path, folder: Path | None) -> list[str]:
    files = sorted(folder.glob("*.sql")) if folder and folder.is_dir() else []
    connection = _connect(path)
    try:
        with _file_lock(path.with_name(path.name + ".migrate.lock")):
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
                "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in connection.execute(f"SELECT name FROM {MIGRATIONS_TABLE}")}
            pending = [file for file in files if file.name not in done]
            for file in pending:
                _apply(connection, file)
            return [file.name for file in pending]
    finally:
        connection.close()


def _apply(connection: sqlite3.Connection, file: Path) -> None:
    """Run one file and record it in one transaction: it applies whole or not at all."""
    try:
        connection.executescript("BEGIN IMMEDIATE;\n" + file.read_text(encoding="utf-8"))
        connection.execute(
            f"INSERT INTO {MIGRATIONS_TABLE} (name, applied_at) VALUES (?, ?)",
            (file.name, datetime.now(UTC).isoformat()),
        )
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise ConfigError(
            file, f"SQL migration failed: {error}: fix the file and run `manage.py migrate` again"
        ) from None
    logger.info("Applied database migration %s", file.name)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def databases_of(config: PloyConfig) -> dict[str, Database]:
    return {db.binding: _database(config, db) for db in config.databases}


def _database(config: PloyConfig, db: DatabaseConfig) -> Database:
    folder = config.root / "migrations"
    if len(config.databases) > 1:
        folder = folder / db.binding
    if db.url is not None:
        from engine.server_database import PostgresDatabase

        return PostgresDatabase(binding=db.binding, url=db.url, migrations=folder)
    path = Path(settings.PLOY_DATA_DIR) / "db" / f"{db.name}.sqlite3"
    return Database(binding=db.binding, path=path, migrations=folder)


def migrate_after_django(**kwargs: object) -> None:
    """`manage.py migrate` also applies the SQL migrations of every `db` binding."""
    from engine.bindings import current_env

    for database in current_env().databases.values():
        for name in database.migrate():
            print(f"  Applied {database.binding} migration {name}")
