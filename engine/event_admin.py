"""The admin's events: read-only, inline on their execution and as a list."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from engine.admin_display import ReadOnlyMixin, execution_link, pretty_json
from engine.admin_inlines import PagedInlineMixin
from engine.admin_scale import IdPrefixSearchMixin, PageAheadListMixin
from engine.models import Event

PAYLOADS = ("input", "output", "error")


class EventFieldsMixin:
    """An event's payload as escaped JSON, and the step that received it."""

    @admin.display(description="payload")
    def payload_json(self, event: Event) -> SafeString:
        return pretty_json(event.payload)

    @admin.display(description="received by")
    def consumer(self, event: Event) -> SafeString | str:
        if event.consumed_by_id is None:
            return "- (kept until a step waits for its type)"
        url = reverse("admin:engine_step_change", args=[event.consumed_by_id])
        name = event.consumed_by.name if event.consumed_by else event.consumed_by_id
        return format_html('<a href="{}">{}</a>', url, name)


class EventInline(PagedInlineMixin, EventFieldsMixin, ReadOnlyMixin, admin.TabularInline):
    model = Event
    extra = 0
    shown = 50
    shown_order = ("-id",)
    shown_label = "latest"
    rest_filter = "execution"
    fields = ("type", "payload_json", "created_at", "consumer", "consumed_at")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Event]:
        return super().get_queryset(request).select_related("consumed_by")


@admin.register(Event)
class EventAdmin(
    PageAheadListMixin, IdPrefixSearchMixin, EventFieldsMixin, ReadOnlyMixin, admin.ModelAdmin
):
    """Events as they were sent; they change only when a waiting step receives them. No list
    filter by type: its choices would read every event (`?type=` in the URL still filters)."""

    list_display = ("id", "execution", "type", "created_at", "consumer", "consumed_at")
    search_fields = ("execution__id", "type")
    id_field = "execution_id"
    exact_fields = ("type",)
    search_help_text = "The start of an execution id, or an event type (the whole type)."
    list_select_related = ("execution", "consumed_by")
    list_deferred = (
        "payload",
        *(f"{row}__{field}" for row in ("execution", "consumed_by") for field in PAYLOADS),
    )
    ordering = ("-id",)
    fields = (
        "id",
        "execution_page",
        "type",
        "payload_json",
        "created_at",
        "consumer",
        "consumed_at",
    )
    readonly_fields = fields

    @admin.display(description="execution")
    def execution_page(self, event: Event) -> SafeString:
        return execution_link(event.execution_id)
