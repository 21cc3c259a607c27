"""`env.DB` on PostgreSQL (`DB: {url: ...}` / `{url_env: ...}`): one database for many hosts.

The same API as the SQLite binding, `?` placeholders included, and the same shapes of values
(numbers as int or float, times as text); autocommit, as SQLite's, outside a transaction step.
Each thread keeps one connection, checked before reuse once it has been idle a while.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from django.conf import settings
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.numeric import NumericLoader
from psycopg.types.string import TextLoader

from engine.database import MIGRATIONS_TABLE, Database
from engine.errors import ConfigError
from engine.placeholders import to_pyformat

logger = logging.getLogger(__name__)

# A connection idle this long is checked with a round trip before it is used again.
IDLE_CHECK_SECONDS = 30.0
# One advisory lock per database keeps concurrent start-ups from migrating at once.
MIGRATION_LOCK = zlib.crc32(MIGRATIONS_TABLE.encode())
# A step's transaction left idle this long (its worker frozen, or cut off) is ended by the
# server, so that its locks do not outlive the worker's claim.
IDLE_LIMIT = "SELECT set_config('idle_in_transaction_session_timeout', %s, true)"
# Read as text, as SQLite returns them, so that a row is JSON as it stands.
TEXT_TYPES = ("date", "time", "timetz", "timestamp", "timestamptz", "interval", "uuid")


class NumberLoader(NumericLoader):
    """NUMERIC as SQLite's NUMERIC affinity reads it: an int when whole, else a float."""

    def load(self, data: bytes) -> int | float:  # type: ignore[override]
        value = super().load(data)
        if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral():
            return int(value)
        return float(value)


def idle_limit() -> int:
    """Milliseconds: the worker timeout, past which the worker may be declared dead."""
    return max(1, int(settings.PLOY_WORKER_TIMEOUT_SECONDS * 1000))


def redacted(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    connection = psycopg.connect(url, autocommit=True, row_factory=dict_row)
    connection.adapters.register_loader("numeric", NumberLoader)
    for name in TEXT_TYPES:
        connection.adapters.register_loader(name, TextLoader)
    connection.execute("SET TIME ZONE 'UTC'")
    return connection


class PostgresDatabase(Database):
    """A PostgreSQL database; one connection per thread, migrations applied on first use."""

    def __init__(self, *, binding: str, url: str, migrations: Path | None) -> None:
        super().__init__(binding=binding, path=Path(), migrations=migrations)
        self.url = url

    def __repr__(self) -> str:
        return f"<PostgresDatabase {self.binding}: {redacted(self.url)}>"

    def exec(self, sql: str) -> dict[str, Any]:
        """Run one or more statements; with no parameters, `%` and `?` are plain text."""
        self.connection().execute(sql)
        return {"success": True}

    # psycopg's connection and cursor stand where the SQLite binding has sqlite3's.
    def execute(  # type: ignore[override]
        self, sql: str, params: Sequence[object]
    ) -> psycopg.Cursor[dict[str, Any]]:
        return self.connection().execute(to_pyformat(sql), tuple(params))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        connection = self.connection()
        if connection.info.transaction_status != TransactionStatus.IDLE:
            raise RuntimeError(f"env.{self.binding}: a transaction is already open on this thread")
        with connection.transaction():
            connection.execute(IDLE_LIMIT, (str(idle_limit()),))
            yield

    def create_table(self, sql: str) -> None:
        """As SQLite's; two hosts creating one table at once would collide: in turn here."""
        with self._lock:
            if sql in self._tables:
                return
        connection = self.connection()
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            connection.execute(sql)
        with self._lock:
            self._tables.add(sql)

    def connection(self) -> psycopg.Connection[dict[str, Any]]:  # type: ignore[override]
        connection: psycopg.Connection[dict[str, Any]] | None = getattr(
            self._local, "connection", None
        )
        now = time.monotonic()
        if connection is not None and not self._is_usable(connection, now):
            connection.close()
            connection = None
        if connection is None:
            self.migrate()
            connection = self._local.connection = self._connect()
        self._local.used_at = now
        return connection

    def _is_usable(self, connection: psycopg.Connection[dict[str, Any]], now: float) -> bool:
        if connection.closed or connection.broken:
            return False
        idle = now - getattr(self._local, "used_at", now)
        in_transaction = connection.info.transaction_status != TransactionStatus.IDLE
        if idle < IDLE_CHECK_SECONDS or in_transaction:
            return True
        try:
            connection.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def _connect(self) -> psycopg.Connection[dict[str, Any]]:
        try:
            return connect(self.url)
        except psycopg.OperationalError as error:
            raise ConfigError(
                f"db.{self.binding}",
                f"cannot connect to {redacted(self.url)} ({one_line(error)}): check the URL "
                "and that the server is up",
            ) from None

    def migrate(self) -> list[str]:
        """Apply the pending SQL files, once per process; an advisory lock keeps hosts in turn."""
        with self._lock:
            if self._migrated:
                return []
            connection = self._connect()
            try:
                applied = apply_migrations(connection, self.migrations)
            finally:
                connection.close()
            self._migrated = True
            return applied


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def apply_migrations(
    connection: psycopg.Connection[dict[str, Any]], folder: Path | None
) -> list[str]:
    files = sorted(folder.glob("*.sql")) if folder and folder.is_dir() else []
    # Session-level: released at unlock, or by the server if this process dies holding it.
    connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} "
            "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        rows = connection.execute(f"SELECT name FROM {MIGRATIONS_TABLE}").fetchall()
        done = {row["name"] for row in rows}
        pending = [file for file in files if file.name not in done]
        for file in pending:
            _apply(connection, file)
        return [file.name for file in pending]
    finally:
        connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


def _apply(connection: psycopg.Connection[dict[str, Any]], file: Path) -> None:
    """Run one file and record it in one transaction: it applies whole or not at all."""
    try:
        with connection.transaction():
            connection.execute(file.read_text(encoding="utf-8"))
            connection.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} (name, applied_at) VALUES (%s, %s)",
                (file.name, datetime.now(UTC).isoformat()),
            )
    except psycopg.Error as error:
        raise ConfigError(
            file,
            f"SQL migration failed: {one_line(error)}: fix the file and run `manage.py migrate` "
            "again",
        ) from None
    logger.info("Applied database migration %s", file.name)
