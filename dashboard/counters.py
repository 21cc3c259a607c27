"""Counts of executions created since a time, exact, at a cost bounded whatever the traffic.

The whole minutes of the window are read from the per-minute counts the database keeps
(engine.counts): a row per (minute, workflow, status, writer shard), however many executions
each minute had. The executions created in the part-minute at the window's start are counted
from the (status, created_at) or (workflow, status, created_at) index: at most one minute of
traffic. All of it in one statement.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from django.db import connection

from engine import counts
from engine.count_schema import COUNTS
from engine.models import Execution


def counts_since(since: datetime, groups: list[dict[str, str]]) -> list[int]:
    """For each group of exact field values (e.g. `{"status": "failed"}`), how many executions
    created since `since` match it: one statement."""
    if not groups:
        return []
    if any(set(group) - {"workflow", "status"} for group in groups):
        raise ValueError(f"counts are kept by workflow and status only, not {groups}")
    counts.check_window(since)
    first, boundary = counts.whole_buckets_since(since)
    sql, params = _statement(groups, first, since, boundary)
    whole: dict[tuple[str, str], int] = {}
    partial = [0] * len(groups)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for group, workflow, status, total in cursor.fetchall():
            if group < 0:
                whole[workflow, status] = int(total)
            else:
                partial[group] = int(total)
    return [partial[index] + _matching(whole, group) for index, group in enumerate(groups)]


def _statement(
    groups: list[dict[str, str]], first: int, since: datetime, boundary: datetime
) -> tuple[str, list[object]]:
    """The whole minutes grouped by (workflow, status), then one index range count per group
    for the part-minute, told apart by the first column (-1, or the group's position)."""
    table = connection.ops.quote_name(Execution._meta.db_table)
    field = Execution._meta.get_field("created_at")
    low = field.get_db_prep_value(since, connection)
    high = field.get_db_prep_value(boundary, connection)
    parts = [
        f"SELECT -1, workflow, status, SUM(executions) FROM {COUNTS} WHERE bucket >= %s "
        "GROUP BY workflow, status"
    ]
    params: list[object] = [first]
    for index, group in enumerate(groups):
        conditions = [f"{connection.ops.quote_name(name)} = %s" for name in group]
        conditions += ["created_at >= %s", "created_at < %s"]
        parts.append(
            f"SELECT {index}, '', '', (SELECT COUNT(*) FROM {table} "
            f"WHERE {' AND '.join(conditions)})"
        )
        params += [*group.values(), low, high]
    return " UNION ALL ".join(parts), params


def _matching(whole: Mapping[tuple[str, str], int], group: dict[str, str]) -> int:
    return sum(
        total
        for (workflow, status), total in whole.items()
        if group.get("workflow", workflow) == workflow and group.get("status", status) == status
    )
