"""The admin's steps and attempts: read-only, inline on their execution and as lists."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from engine import attempt_logs
from engine.admin_display import (
    CELL_CHARS,
    PayloadMixin,
    ReadOnlyMixin,
    children_url,
    execution_link,
    traceback_html,
)
from engine.admin_inlines import PagedInlineMixin
from engine.admin_reruns import RerunFromStepInlineMixin
from engine.admin_scale import IdPrefixSearchMixin, PageAheadListMixin, workflow_filter
from engine.models import Attempt, Step

# Deferred on the lists that show an execution beside each row (up to 3 payloads of 1 MB each).
EXECUTION_PAYLOADS = ("execution__input", "execution__output", "execution__error")

ATTEMPT_FIELDS = (
    "number",
    "status",
    "error_type",
    "error_message",
    "traceback",
    "started_at",
    "finished_at",
    "worker",
    "logs_text",
)


class AttemptFieldsMixin:
    """An attempt's traceback and logs, escaped and folded."""

    @admin.display(description="traceback")
    def traceback(self, attempt: Attempt) -> SafeString | str:
        return traceback_html(attempt)

    @admin.display(description="logs")
    def logs_text(self, attempt: Attempt) -> SafeString | str:
        if not attempt.logs:
            return "-"
        text = "\n".join(attempt_logs.as_text(line) for line in attempt.logs)
        lines = len(attempt.logs)
        return format_html(
            '<details><summary>{} line{}</summary><pre style="margin: 0">{}</pre></details>',
            lines,
            "" if lines == 1 else "s",
            text,
        )


# On a step's page: its latest attempts, each with its traceback and logs; on an execution's
# page, each step's latest few, in a line each.
ATTEMPTS_SHOWN = 10
# An execution's admin page shows its first steps, each with its latest 3 attempts: 20 keep the
# page of an execution of 10,000 steps within 50 ms; the step list pages through the rest.
STEPS_SHOWN = 20
ATTEMPTS_PER_STEP = 3


class AttemptInline(PagedInlineMixin, AttemptFieldsMixin, ReadOnlyMixin, admin.TabularInline):
    model = Attempt
    extra = 0
    fields = ATTEMPT_FIELDS
    readonly_fields = ATTEMPT_FIELDS
    shown = ATTEMPTS_SHOWN
    shown_order = ("-number",)
    shown_label = "latest"
    rest_filter = "step"


class StepInline(
    PagedInlineMixin, RerunFromStepInlineMixin, PayloadMixin, ReadOnlyMixin, admin.TabularInline
):
    model = Step
    fk_name = "execution"
    extra = 0
    show_change_link = True
    shown = STEPS_SHOWN
    shown_order = ("position",)
    rest_filter = "execution"
    payload_chars = CELL_CHARS
    fields = (
        "name",
        "status",
        "input_json",
        "output_json",
        "attempts_list",
        "started_at",
        "finished_at",
        "reused_from_link",
        "rerun_from_link",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Step]:
        latest = Attempt.objects.only(*ATTEMPT_LINE).order_by("-number")[:ATTEMPTS_PER_STEP]
        attempts = Prefetch("attempts", queryset=latest, to_attr="latest_attempts")
        return super().get_queryset(request).prefetch_related(attempts)

    @admin.display(description="attempts")
    def attempts_list(self, step: Step) -> SafeString | str:
        """The latest attempts in a line each; the step's own page shows the tracebacks."""
        latest = getattr(step, "latest_attempts", None)
        if latest is None:
            latest = list(step.attempts.only(*ATTEMPT_LINE).order_by("-number")[:ATTEMPTS_PER_STEP])
        rows = [(a.number, a.status, _attempt_error(a)) for a in reversed(latest)]
        lines = format_html_join("", "<div>#{} {}{}</div>", rows)
        earlier = (latest[-1].number - 1) if latest else 0
        if earlier > 0:
            url = reverse("admin:engine_step_change", args=[step.pk])
            more = "attempt" if earlier == 1 else "attempts"
            lines = format_html(
                '<div><a href="{}">{} earlier {}</a></div>{}', url, earlier, more, lines
            )
        return lines or "-"


ATTEMPT_LINE = ("step_id", "number", "status", "error_type", "error_message")


def _attempt_error(attempt: Attempt) -> str:
    return f": {attempt.error_type}: {attempt.error_message}" if attempt.error_type else ""


# A search by name alone (no index of its own) looks through this many of the newest steps.
SEARCH_WINDOW = 100_000


@admin.register(Step)
class StepAdmin(
    PageAheadListMixin, IdPrefixSearchMixin, PayloadMixin, ReadOnlyMixin, admin.ModelAdmin
):
    list_display = ("name", "execution", "position", "status", "started_at", "finished_at")
    list_filter = (workflow_filter("execution__workflow"), "status")
    search_fields = ("execution__id", "name")
    id_field = "execution_id"
    exact_fields = ("name",)
    search_window = SEARCH_WINDOW
    search_help_text = (
        "The start of an execution id, and a step name (the whole name); a name alone looks "
        f"through the newest {SEARCH_WINDOW:,} steps."
    )
    list_select_related = ("execution",)
    list_deferred = ("input", "output", "error", *EXECUTION_PAYLOADS)
    ordering = ("-id",)

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        """The newest first, in the order of the index a filter reads: one execution's steps in
        order; a workflow's, its executions newest first (by the step's own id, every step of
        the workflow would be sorted); else the steps' own ids (the planners sort a whole table
        for any other order with a filter on a column of its own)."""
        if "execution" in request.GET:
            return ("position",)
        if "execution__workflow" in request.GET:
            return ("execution", "position")
        return self.ordering

    fields = (
        "execution_page",
        "name",
        "position",
        "status",
        "retries",
        "attempt_count",
        "started_at",
        "finished_at",
        "wake_at",
        "event_type",
        "child_link",
        "branch_of",
        "input_json",
        "output_json",
        "error_json",
    )
    readonly_fields = fields
    inlines = (AttemptInline,)

    @admin.display(description="execution")
    def execution_page(self, step: Step) -> SafeString:
        return execution_link(step.execution_id)

    @admin.display(description="child")
    def child_link(self, step: Step) -> SafeString | str:
        if step.child_id:
            return execution_link(step.child_id)
        if step.input and isinstance(step.input, dict) and "children" in step.input:
            url = children_url(step.execution_id)
            return format_html('<a href="{}">the children of its execution</a>', url)
        return "-"


@admin.register(Attempt)
class AttemptAdmin(
    PageAheadListMixin, IdPrefixSearchMixin, AttemptFieldsMixin, ReadOnlyMixin, admin.ModelAdmin
):
    list_display = (
        "step",
        "number",
        "status",
        "error_type",
        "started_at",
        "finished_at",
        "worker",
    )
    list_filter = (workflow_filter("step__execution__workflow"), "status")
    search_fields = ("step__execution__id", "step__name", "error_type", "worker")
    id_field = "step__execution_id"
    # Attempts have no index on these: alone, they look through the newest attempts only.
    exact_fields = ("step__name", "error_type", "worker__startswith")
    search_window = SEARCH_WINDOW
    search_help_text = (
        "The start of an execution id, and a step name or an error type (whole), or the start "
        f"of a worker id; without an id, the search looks through the newest {SEARCH_WINDOW:,} "
        "attempts."
    )
    list_select_related = ("step",)
    list_deferred = (
        "error_traceback",
        "logs",
        *(f"step__{f}" for f in ("input", "output", "error")),
    )
    ordering = ("-id",)

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        """As the steps' list: a step's attempts the latest first; a workflow's, in the order of
        its executions; else the newest attempts first."""
        if "step" in request.GET:
            return ("-number",)
        if "step__execution__workflow" in request.GET:
            return ("step__execution", "step__position", "-number")
        return self.ordering

    fields = ("step", *ATTEMPT_FIELDS)
    readonly_fields = fields
