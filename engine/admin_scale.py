"""The admin's lists at millions of rows: no page counts the whole table, no filter reads every
row for its choices, and an id search is a range on an index instead of `LIKE '%...%'`."""

from __future__ import annotations

from functools import cached_property
from typing import Any, cast

from django.contrib import admin
from django.contrib.admin.views.main import PAGE_VAR, ChangeList
from django.core.paginator import Page, Paginator
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

    def estimate(self, queryset: QuerySet[Any]) -> int | None:
        """The table's estimated size where it is too big to count; notes that it is one."""
        estimate = large_table_estimate(queryset)
        self.is_estimate = estimate is not None
        return estimate

    @cached_property
    def count(self) -> int:
        queryset = cast("QuerySet[Any]", self.object_list)
        estimate = self.estimate(queryset)
        if estimate is not None:
            return estimate
        counted = int(queryset.order_by().values("pk")[: COUNT_CAP + 1].count())
        self.is_capped = counted > COUNT_CAP
        return counted


def large_table_estimate(queryset: QuerySet[Any]) -> int | None:
    """An unfiltered list's estimated size, where it is too big to count (over COUNT_CAP)."""
    if queryset.query.where:
        return None
    estimate = estimated_rows(queryset.model, queryset.db)
    return int(estimate) if estimate is not None and estimate > COUNT_CAP else None


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


class PageAheadPaginator(BoundedCountPaginator):
    """A filtered list of a table whose filters have no index (steps, attempts, events): no
    count at all, since even a capped one reads the whole table for a rare value. The rows of
    the page asked for and one more are read once; the list knows its pages up to the next."""

    def __init__(self, object_list: Any, per_page: int, *, number: int = 1) -> None:
        super().__init__(object_list, per_page)
        self.number = max(number, 1)
        self.rows: list[Any] | None = None

    @cached_property
    def count(self) -> int:
        queryset = cast("QuerySet[Any]", self.object_list)
        estimate = self.estimate(queryset)
        if estimate is not None:
            return estimate
        offset = (self.number - 1) * self.per_page
        rows = list(queryset[offset : offset + self.per_page + 1])
        self.rows = rows[: self.per_page]
        self.is_capped = len(rows) > self.per_page
        return offset + len(rows)

    def page(self, number: int | str) -> Page:
        number = self.validate_number(number)
        if self.rows is not None and number == self.number:
            return Page(self.rows, number, self)
        return super().page(number)


class PageAheadChangeList(ChangeList):
    """A list of one page reuses the rows its paginator read instead of reading them again."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        rows = getattr(self.paginator, "rows", None)
        if rows is not None and not self.multi_page:
            self.result_list = rows


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
    # Where `exact_fields` have no index of their own (an integer primary key): a search with no
    # id in it looks through this many of the newest rows, a range on the key, not the table.
    search_window: int | None = None

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        words = search_term.split()
        for word in words:
            queryset = queryset.filter(self.word_condition(word))
        if self.search_window and words and all(id_prefix_range(w) is None for w in words):
            rows = queryset.model._default_manager.order_by("-pk").values_list("pk", flat=True)
            newest = rows.first()
            if newest is not None:
                queryset = queryset.filter(pk__gt=newest - self.search_window)
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


class PageAheadListMixin(BoundedListMixin):
    """The lists of steps, attempts and events: paged by reading ahead (PageAheadPaginator),
    with no "Show all", which would read every row an open-ended list matches."""

    paginator: type[Paginator] = PageAheadPaginator
    list_per_page = 50
    list_max_show_all = 50

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator:
        try:
            number = int(request.GET.get(PAGE_VAR, 1))
        except ValueError:
            number = 1
        return PageAheadPaginator(queryset, per_page, number=number)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return PageAheadChangeList
