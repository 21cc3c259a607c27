"""The SQLite queue's one-statement enqueue: every message is stored, committed, and dequeued
in priority order then in order of arrival, as with Huey's own."""

from __future__ import annotations

import sqlite3

from engine.queue import SqliteQueueStorage


def test_messages_are_committed_and_come_out_by_priority_then_in_order(tmp_path):
    storage = SqliteQueueStorage(name="ployweb", filename=str(tmp_path / "queue.sqlite3"))
    for message, priority in [(b"a", None), (b"b", 0), (b"urgent", 10), (b"c", None)]:
        storage.enqueue(message, priority)
    # Seen by another connection at once: nothing is left in an open transaction.
    with sqlite3.connect(tmp_path / "queue.sqlite3") as other:
        assert other.execute("select count(*) from task").fetchone() == (4,)
    assert [bytes(storage.dequeue()) for _ in range(4)] == [b"urgent", b"a", b"b", b"c"]
    assert storage.dequeue() is None
