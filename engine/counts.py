"""Executions by workflow and status, read from the rows the database keeps exact on every
write (engine.count_schema): all-time totals, and one row per created minute, so a count
reads a bounded number of rows whatever the traffic. The leader prunes old minutes.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from engine import clock
from engine.count_schema import COUNTS, LOCK_SPACE, REBUILT_HOURS, TOTALS

logger = logging.getLogger(__name__)

BUCKET = timedelta(minutes=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Minutes are kept this long (the longest window a reader may ask for is an hour shorter).
KEPT = timedelta(hours=REBUILT_HOURS)
LONGEST_WINDOW = KEPT - timedelta(hours=1)
# PostgreSQL: a minute this old is rarely written any more; its shards are summed into one row.
SETTLED = timedelta(minutes=5)


def bucket_of(moment: datetime) -> int:
    """The minute `moment` falls in, as the triggers number it (minutes since the epoch)."""
    return (moment - EPOCH) // BUCKET


def whole_buckets_since(since: datetime) -> tuple[int, datetime]:
    """The first whole minute at or after `since`, and when it starts: executions created
    between `since` and that start are counted from their own rows (at most a minute's)."""
    first = -((EPOCH - since) // BUCKET)
    return first, EPOCH + first * BUCKET


def check_window(since: datetime) -> None:
    """Minutes older than KEPT are pruned: refuse a window they would be missing from. (The
    host's clock: a bound this loose needs no query of the database's.)"""
    if since < timezone.now() - LONGEST_WINDOW - BUCKET:
        raise ValueError(
            f"counts reach back {LONGEST_WINDOW} at most, not to {since.isoformat()}: "
            "count older executions from their rows"
        )


def totals() -> dict[tuple[str, str], int]:
    """Every execution the database holds, by (workflow, status), zeros left out: one query of
    a few rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT workflow, status, SUM(executions) FROM {TOTALS} GROUP BY workflow, status"
        )
        rows = cursor.fetchall()
    return {(workflow, status): int(total) for workflow, status, total in rows if total}


def prune(now: datetime | None = None) -> int:
    """The leader's periodic sweep: drop minutes older than KEPT and rows at zero; on
    PostgreSQL, sum each settled minute's shards into shard 0. Never waits for a writer's
    rows (SKIP LOCKED): what a commit holds now is pruned next time. Rows deleted; a database
    error is logged and left to the next sweep."""
    try:
        return _prune(now or clock.now())
    except DatabaseError as error:
        logger.warning("counts: cannot prune now: %s", error)
        return 0


def _prune(now: datetime) -> int:
    oldest, settled = bucket_of(now - KEPT), bucket_of(now - SETTLED)
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            cursor.execute(f"DELETE FROM {COUNTS} WHERE bucket < %s OR executions = 0", [oldest])
            return int(cursor.rowcount)
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, 0)", [LOCK_SPACE])
        if not cursor.fetchone()[0]:  # another leader prunes now
            return 0
        cursor.execute(SETTLE, [settled, oldest])
        cursor.execute(DROP_OLD, [oldest])
        return int(cursor.rowcount)


# Each settled minute's shards, deleted and summed into its shard 0 row in one statement.
SETTLE = f"""
WITH moved AS (
    DELETE FROM {COUNTS} WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM {COUNTS} WHERE bucket < %s AND bucket >= %s AND shard <> 0
        FOR UPDATE SKIP LOCKED))
    RETURNING bucket, workflow, status, executions
)
INSERT INTO {COUNTS} AS settled (bucket, workflow, status, shard, executions)
SELECT bucket, workflow, status, 0, SUM(executions) FROM moved GROUP BY bucket, workflow, status
ON CONFLICT (bucket, workflow, status, shard)
DO UPDATE SET executions = settled.executions + EXCLUDED.executions
"""
DROP_OLD = f"""
DELETE FROM {COUNTS} WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM {COUNTS} WHERE bucket < %s OR executions = 0 FOR UPDATE SKIP LOCKED))
"""
