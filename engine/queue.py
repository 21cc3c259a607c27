"""Huey's SQLite queue, at the durability a message needs.

A message only says "look at execution X now": the database holds every execution, and the
leader's sweep re-queues any whose message was lost. So the queue file commits at
synchronous=NORMAL (WAL: a commit survives a crash of the process, the last ones may be lost
with the machine's power) instead of Huey's FULL, which waits for the disk on every message.
"""

from __future__ import annotations

import sqlite3

from huey.api import Huey
from huey.storage import SqliteStorage


class SqliteQueueStorage(SqliteStorage):
    def _create_connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection = super()._create_connection()
        connection.execute("pragma synchronous=NORMAL")
        return connection

    def enqueue(self, data: bytes, priority: float | None = None) -> None:
        """One INSERT, which commits by itself (Huey's connection is in autocommit mode): the
        same message as Huey's BEGIN EXCLUSIVE, INSERT, COMMIT, in a third of the statements."""
        with self.lock:
            self.conn.execute(
                "insert into task (queue, data, priority) values (?, ?, ?)",
                (self.name, self.to_blob(data), priority or 0),
            )


class SqliteQueue(Huey):
    storage_class = SqliteQueueStorage
