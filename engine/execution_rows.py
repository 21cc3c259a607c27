"""A new execution's row, written in plain SQL.

Profiled, `Execution.objects.create()` was a third of a trigger's time: the ORM compiles the
same INSERT afresh on every call. This writes every column the ORM would (the model's own
defaults for those not given, each value through its field's adapter) with one statement
built once per database. A model with save signals goes through the ORM, so that they fire.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, signals
from django.db.models.fields import NOT_PROVIDED

from engine.models import Execution

Adapter = Callable[[Any, BaseDatabaseWrapper], Any]


def insert_execution(**values: Any) -> Execution:
    """Insert the row of a new execution (`values` by attribute name: `rerun_of_id`, not
    `rerun_of`) and return it as the ORM would have: saved, with its defaults filled in."""
    if _has_save_signals():
        return Execution.objects.create(**values)
    row = [values[name] if name in values else field.get_default() for name, field in _fields()]
    database = connections[DEFAULT_DB_ALIAS]  # once: each look-up through `connection` costs
    adapters = _adapters(database.vendor)
    params = [adapt(value, database) for adapt, value in zip(adapters, row, strict=True)]
    with database.cursor() as cursor:
        cursor.execute(_sql(database.vendor), params)
    # Positional, as Model.from_db builds a loaded row: the quickest way to an instance.
    execution = Execution(*row)  # type: ignore[misc]  # django-stubs types keywords only
    execution._state.adding = False
    execution._state.db = database.alias
    return execution


def _has_save_signals() -> bool:
    return signals.pre_save.has_listeners(Execution) or signals.post_save.has_listeners(Execution)


@cache
def _fields() -> tuple[tuple[str, Field[Any, Any]], ...]:
    fields = Execution._meta.concrete_fields
    for field in fields:
        if field.db_default is not NOT_PROVIDED or getattr(field, "auto_now_add", False):
            raise TypeError(f"Execution.{field.name}: a default the ORM computes at save time")
    return tuple((field.attname, field) for field in fields)


@cache
def _sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(field.column)) for _name, field in _fields())
    values = ", ".join("%s" for _ in _fields())
    return f"INSERT INTO {quote(Execution._meta.db_table)} ({columns}) VALUES ({values})"


@cache
def _adapters(vendor: str) -> tuple[Adapter, ...]:
    return tuple(_adapter(field) for _name, field in _fields())


def _adapter(field: Field[Any, Any]) -> Adapter:
    """What `field.get_db_prep_save` does for the values a trigger writes, without its checks."""
    kind = field.get_internal_type()
    if kind in {"CharField", "TextField", "PositiveIntegerField", "IntegerField"}:
        return lambda value, _database: value
    if kind == "DateTimeField":
        return lambda value, database: database.ops.adapt_datetimefield_value(value)
    if kind == "JSONField":
        encoder = getattr(field, "encoder", None)
        # None is SQL NULL, as the ORM stores it (not the JSON text "null").
        return lambda value, database: (
            None if value is None else database.ops.adapt_json_value(value, encoder)
        )
    target: Any = getattr(field, "target_field", field)
    return lambda value, database: target.get_db_prep_save(value, database)
