"""Inlines of a bounded size: an execution of 10,000 steps, or a step of 100 attempts, shows a
page of them on its admin page and links to the list that pages through all of them. The rows
are read-only, so they are drawn as a plain table of their cells: the admin's own inline
template renders a form field per cell, several times slower."""

from __future__ import annotations

from typing import Any, cast

from django.contrib import admin
from django.contrib.admin.utils import display_for_field, label_for_field, lookup_field
from django.db.models import Model, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.template.defaultfilters import linebreaksbr
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

# An inline counts its rows up to this many, then says "over 10,000".
COUNT_CAP = 10_000


class PagedFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    """The first `shown` rows in `order`, read with one row more to know whether others
    follow; then their number, counted up to COUNT_CAP, and the list that holds them all."""

    shown = 50
    order: tuple[str, ...] = ()
    rest_filter = ""  # the list's query-string parameter naming the parent row
    inline: Any  # the PagedInlineMixin drawing it
    names: tuple[str, ...] = ()  # its fields

    def get_queryset(self) -> Any:
        if not hasattr(self, "_queryset"):
            queryset = cast("QuerySet[Any]", self.queryset).order_by(*self.order)
            rows = list(queryset[: self.shown + 1])
            self.more = len(rows) > self.shown
            self.total = len(rows)
            if self.more:
                self.total = queryset.order_by().values("pk")[: COUNT_CAP + 1].count()
            self._queryset = rows[: self.shown]
        return self._queryset

    def header(self) -> list[str]:
        model = cast("type[Model]", self.model)
        labels = [str(label_for_field(name, model, self.inline)) for name in self.names]
        return ["", *labels] if self.inline.show_change_link else labels

    def table(self) -> list[list[SafeString | str]]:
        """Each row's cells as the admin's read-only fields show them, escaped."""
        rows = []
        empty = self.inline.get_empty_value_display()
        opts = cast("type[Model]", self.model)._meta
        for row in self.get_queryset():
            cells = [_cell(name, row, self.inline, empty) for name in self.names]
            if self.inline.show_change_link:
                url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[row.pk])
                cells.insert(0, format_html('<a href="{}">{}</a>', url, row))
            rows.append(cells)
        return rows

    @property
    def capped(self) -> bool:
        return self.more and self.total > COUNT_CAP

    @property
    def rest_url(self) -> str:
        opts = cast("type[Model]", self.model)._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        return f"{url}?{self.rest_filter}={self.instance.pk}"


class PagedInlineMixin(admin.options.InlineModelAdmin):  # type: ignore[type-arg]
    """An inline showing `shown` rows in `shown_order`, then a line linking to the rest."""

    template = "admin/engine/paged_tabular.html"
    shown = 50
    shown_order: tuple[str, ...] = ()
    rest_filter = ""
    shown_label = "first"

    def get_formset(self, request: HttpRequest, obj: Model | None = None, **kwargs: Any) -> Any:
        attrs = {
            "shown": self.shown,
            "order": self.shown_order,
            "rest_filter": self.rest_filter,
            "inline": self,
            "names": tuple(cast("tuple[str, ...]", self.fields or ())),
        }
        base = type("PagedFormSet", (PagedFormSet,), attrs)
        return super().get_formset(request, obj, formset=base, **kwargs)


def _cell(name: str, row: Model, inline: Any, empty: str) -> Any:
    """What django.contrib.admin.helpers.AdminReadonlyField.contents shows, without a form."""
    field, _attr, value = lookup_field(name, row, inline)
    if field is None:
        return value if hasattr(value, "__html__") else linebreaksbr(value)
    return linebreaksbr(display_for_field(value, field, empty))
