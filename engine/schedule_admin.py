"""The admin's Schedules: the rows of ploy.yaml's cron: section, read-only (ploy.yaml is their
source), with pause and resume actions that go through engine.schedules as the API's do."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from engine import schedules
from engine.admin import RUN_PERMISSION
from engine.admin_display import ReadOnlyMixin, execution_link
from engine.models import Schedule


@admin.register(Schedule)
class ScheduleAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("name", "schedule", "workflow", "next_run", "last_run", "paused")
    list_filter = ("paused",)
    search_fields = ("name",)
    ordering = ("name",)
    fields = (
        "name",
        "schedule",
        "workflow",
        "input",
        "paused",
        "next_run_at",
        "last_run_at",
        "last_run",
        "created_at",
    )
    readonly_fields = fields
    actions = ("pause_selected", "resume_selected")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Schedule]:
        return super().get_queryset(request).select_related("last_execution")

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_PERMISSION)

    def view_on_site(self, schedule: Schedule) -> str | None:
        try:
            return reverse("dashboard:schedule_list") + f"#schedule-{schedule.name}"
        except NoReverseMatch:
            return None

    @admin.display(description="next run")
    def next_run(self, schedule: Schedule) -> str:
        return "paused" if schedule.paused else str(schedule.next_run_at)

    @admin.display(description="last run")
    def last_run(self, schedule: Schedule) -> SafeString | str:
        execution = schedule.last_execution
        if execution is None:
            return "-"
        return format_html("{} ({})", execution_link(execution.id), execution.status)

    @admin.action(description="Pause selected schedules", permissions=["run"])
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        names = list(queryset.values_list("name", flat=True))
        for name in names:
            schedules.pause(name)
        self.message_user(request, f"Paused {', '.join(names)}.", messages.SUCCESS)

    @admin.action(description="Resume selected schedules", permissions=["run"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        names = list(queryset.values_list("name", flat=True))
        for name in names:
            schedules.resume(name)
        self.message_user(
            request, f"Resumed {', '.join(names)}: each runs at its next tick.", messages.SUCCESS
        )
