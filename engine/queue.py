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


class SqliteQueue(Huey):
    storage_class = SqliteQueueStorage
