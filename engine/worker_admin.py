"""The admin's workers: their rows as their processes wrote them, read-only."""

from __future__ import annotations

from django.contrib import admin
from django.urls import NoReverseMatch, reverse

from engine.admin_display import ReadOnlyMixin
from engine.models import Worker


@admin.register(Worker)
class WorkerAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """Worker rows as their processes wrote them; the dashboard's Workers page also counts a live
    row silent past the timeout as dead."""

    list_display = ("id", "host", "pid", "threads", "status", "started_at", "last_seen_at")
    list_filter = ("status",)
    search_fields = ("id", "host")
    search_help_text = "A worker id (or part of one), or a host name."
    ordering = ("-started_at", "-id")
    fields = (
        "id",
        "host",
        "pid",
        "threads",
        "status",
        "started_at",
        "last_seen_at",
        "stopped_at",
    )
    readonly_fields = fields

    def view_on_site(self, worker: Worker) -> str | None:
        try:
            return reverse("dashboard:worker_list") + f"#worker-{worker.id}"
        except NoReverseMatch:
            return None
