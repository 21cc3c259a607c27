"""The admin's lists at millions of rows: no page counts the whole table, no filter reads every
row for its choices, and an id search is a range on an index instead of `LIKE '%...%'`."""

from __future__ import annotations

from functools import cached_property
from typing import Any, cast

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest

from engine import registry
from engine.queries import id_prefix_range

# A filtered list counts its rows up to this many, then says "10,000+".
COUNT_CAP = 10_000


class BoundedCountPaginator(Paginator):
    """The whole table: the database's own estimate of its size once that is over COUNT_CAP;
    a filtered list: its rows counted up to COUNT_CAP + 1, never further."""

    is_estimate = False
    is_capped = False

    @cached_property
    def count(self) -> int:
        queryset = cast("QuerySet[Any]", self.object_list)
        if not queryset.query.where:
            estimate = estimated_rows(queryset.model, queryset.db)
            if estimate is not None and estimate > COUNT_CAP:
                self.is_estimate = True
                return int(estimate)
        counted = int(queryset.order_by().values("pk")[: COUNT_CAP + 1].count())
        self.is_capped = counted > COUNT_CAP
        return counted


def estimated_rows(model: type[Model], alias: str) -> int | None:
    """About how many rows the table holds, in one index or catalog lookup; None if unknown."""
    connection = connections[alias]
    table = model._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Kept by VACUUM and ANALYZE (autovacuum); -1 until the table was first analyzed.
            cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [table])
        elif connection.vendor == "sqlite":
            # The largest rowid: the rows ever inserted, a seek on the table's b-tree.
            cursor.execute(f"SELECT max(rowid) FROM {connection.ops.quote_name(table)}")
        else:
            return None
        row = cursor.fetchone()
    if not row or row[0] is None or row[0] < 0:
        return None
    return int(row[0])


class BoundedListMixin:
    """Bounded counts, no facet counts (each would count the whole table per choice), and the
    list leaves `list_deferred` (payload columns, up to PLOY_MAX_PAYLOAD_BYTES each) unread."""

    paginator: type[Paginator] = BoundedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_deferred: tuple[str, ...] = ()

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset: QuerySet = super().get_queryset(request)  # type: ignore[misc]
        match = request.resolver_match
        if self.list_deferred and match and (match.url_name or "").endswith("_changelist"):
            return queryset.defer(*self.list_deferred)
        return queryset


def workflow_filter(field: str) -> type[admin.SimpleListFilter]:
    """A filter on the workflow name through `field`, its choices read from ploy.yaml (a
    `SELECT DISTINCT` would read every row); any name still filters, bound or not."""

    class WorkflowFilter(admin.SimpleListFilter):
        title = "workflow"
        parameter_name = field

        def lookups(
            self, request: HttpRequest, model_admin: admin.ModelAdmin
        ) -> list[tuple[str, str]]:
            names = dict.fromkeys(b.name for b in registry.current().config.workflows)
            return [(name, name) for name in names]

        def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
            if self.value():
                return queryset.filter(**{field: self.value()})
            return queryset

    return WorkflowFilter


class IdPrefixSearchMixin:
    """A search word that can start an execution id is matched as a range on `id_field` (an
    indexed key); any other word matches one of `exact_fields` (a field, or a field and its
    lookup). Never both at once: an OR with a field that has no index reads the whole table.
    Words narrow each other."""

    id_field = "id"
    exact_fields: tuple[str, ...] = ()

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        for word in search_term.split():
            queryset = queryset.filter(self.word_condition(word))
        return queryset, False

    def word_condition(self, word: str) -> Q:
        bounds = id_prefix_range(word)
        if bounds is not None:
            low, high = bounds
            return Q(**{f"{self.id_field}__gte": low, f"{self.id_field}__lte": high})
        condition = Q(pk__in=[])  # matches nothing when there is no field to match
        for field in self.exact_fields:
            condition |= Q(**{field: word})
        return condition
