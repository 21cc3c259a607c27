"""Counts of executions created since a time, each an index range count, in one statement.

Each count is a range of the (status, created_at) or (workflow, status, created_at) index,
read from the index alone, never a row. A conditional count (`COUNT(*) FILTER`) over a
created_at range instead evaluates every condition on every row of the window: about 2.5
times slower on SQLite. The cost still grows with the executions in the window (an index
entry each), not with the table.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection

from engine.models import Execution


def counts_since(since: datetime, groups: list[dict[str, str]]) -> list[int]:
    """For each group of exact field values (e.g. `{"status": "failed"}`), how many executions
    created since `since` match it: one statement of scalar subqueries."""
    if not groups:
        return []
    table = connection.ops.quote_name(Execution._meta.db_table)
    low = Execution._meta.get_field("created_at").get_db_prep_value(since, connection)
    parts: list[str] = []
    params: list[object] = []
    for group in groups:
        conditions = [f"{connection.ops.quote_name(field)} = %s" for field in group]
        conditions.append("created_at >= %s")
        parts.append(f"(SELECT COUNT(*) FROM {table} WHERE {' AND '.join(conditions)})")
        params += [*group.values(), low]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(parts)}", params)
        return [int(value) for value in cursor.fetchone()]
