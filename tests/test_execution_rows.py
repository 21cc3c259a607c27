"""The plain-SQL INSERT of a new execution writes the very row the ORM writes, column by column
(every column of the table, so a field added later cannot be left out), and the same instance."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from engine.execution_rows import insert_execution
from engine.models import Execution, SlotStatus

pytestmark = pytest.mark.django_db(transaction=True)


def stored(execution_id: object) -> dict[str, Any]:
    """The row as the database holds it: every column, raw, whatever the model declares."""
    table = connection.ops.quote_name(Execution._meta.db_table)
    key = Execution._meta.pk.get_db_prep_value(execution_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE id = %s", [key])
        names = [column[0] for column in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))


def fields(execution: Execution) -> dict[str, Any]:
    return {field.attname: getattr(execution, field.attname) for field in Execution._meta.fields}


def without_id(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if name != "id"}


def parent() -> Execution:
    return Execution.objects.create(workflow="chain", binding="CHAIN", created_at=timezone.now())


VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"input": {"steps": 1, "text": "é"}, "wake_at": "now"},
    "null input": {"input": None, "wake_at": "now"},
    "JSON scalar input": {"input": "text", "wake_at": "now"},
    "idempotency key": {"input": [1, 2], "idempotency_key": "order-7", "wake_at": "now"},
    "claimed here": {
        "input": 1,
        "wake_at": "now",
        "owner": "w-1",
        "run_count": 1,
        "started_at": "now",
    },
    "waiting for a slot": {"input": {}, "slot": SlotStatus.WAITING, "concurrency_key": '"a"'},
    "rerun from a step": {"input": 2, "wake_at": "now", "from_step": "one", "rerun_of": "parent"},
    "no fingerprint": {"input": 3, "wake_at": "now", "code_fingerprint": None},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_row_and_the_instance_are_those_the_orm_creates(variant):
    now = timezone.now()
    values: dict[str, Any] = {
        "binding": "CHAIN",
        "workflow": "chain",
        "created_at": now - timedelta(seconds=1),
        "code_fingerprint": "abc123",
        **VARIANTS[variant],
    }
    for name in ("wake_at", "started_at"):
        if values.get(name) == "now":
            values[name] = now
    if values.pop("rerun_of", None):
        values["rerun_of_id"] = parent().id
    fast = insert_execution(**values)
    fast_row, reloaded = stored(fast.id), fields(Execution.objects.get(id=fast.id))
    Execution.objects.filter(id=fast.id).delete()  # its idempotency key is unique
    orm = Execution.objects.create(**values)
    assert without_id(fast_row) == without_id(stored(orm.id))
    assert without_id(fields(fast)) == without_id(fields(orm))
    assert reloaded == fields(fast)
    assert not fast._state.adding and fast._state.db == orm._state.db


def test_every_column_of_the_table_is_written():
    """A column the INSERT leaves to the database's default would differ from the ORM's row
    only when that default differs from the field's: list the columns, not just the values."""
    execution = insert_execution(binding="CHAIN", workflow="chain", created_at=timezone.now())
    with connection.cursor() as cursor:
        table = connection.introspection.get_table_description(cursor, Execution._meta.db_table)
    assert set(stored(execution.id)) == {column.name for column in table}
    assert {field.column for field in Execution._meta.concrete_fields} == set(stored(execution.id))


def test_a_null_input_is_sql_null_as_the_orm_stores_it():
    execution = insert_execution(binding="CHAIN", workflow="chain", created_at=timezone.now())
    assert Execution.objects.filter(id=execution.id, input__isnull=True).exists()
