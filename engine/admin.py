"""Django admin: executions, steps, attempts and events are read-only; cancel, rerun and
trigger go through engine.runtime, as the API and the dashboard do."""

from __future__ import annotations

import json
from typing import Any, ClassVar, cast

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString

from engine import runtime
from engine.errors import ExecutionAlreadyFinished, PloyError
from engine.forms import TriggerForm
from engine.models import Attempt, Event, Execution, Step, Worker

# Who may cancel, rerun and trigger, here and on the dashboard (dashboard.access): the ORM's
# change permission (superusers have it).
RUN_PERMISSION = "engine.change_execution"


def pretty_json(value: object) -> SafeString:
    """Indented, and escaped by format_html: stored payloads are user data."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return format_html('<pre style="margin: 0; white-space: pre-wrap">{}</pre>', text)


def traceback_html(attempt: Attempt) -> SafeString | str:
    if not attempt.error_traceback:
        return "-"
    return format_html('<pre style="margin: 0">{}</pre>', attempt.error_traceback)


def execution_link(execution_id: object) -> SafeString:
    url = reverse("admin:engine_execution_change", args=[execution_id])
    return format_html('<a href="{}">{}</a>', url, execution_id)


def children_url(execution_id: object) -> str:
    return reverse("admin:engine_execution_changelist") + f"?parent__id__exact={execution_id}"


class HasParentFilter(admin.SimpleListFilter):
    """Children of invoke / invoke_many steps, or the executions nothing started."""

    title = "parent"
    parameter_name = "has_parent"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> list[tuple[str, str]]:
        return [("yes", "has a parent"), ("no", "top-level")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Execution]) -> QuerySet[Execution]:
        if self.value() == "yes":
            return queryset.filter(parent__isnull=False)
        if self.value() == "no":
            return queryset.filter(parent__isnull=True)
        return queryset


class ReadOnlyMixin:
    """Rows change only through engine.runtime, never by editing them here."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


ATTEMPT_FIELDS = (
    "number",
    "status",
    "error_type",
    "error_message",
    "traceback",
    "started_at",
    "finished_at",
    "worker",
)


class PayloadMixin:
    """Input, output and error of an execution or a step, as indented, escaped JSON."""

    @admin.display(description="input")
    def input_json(self, row: Execution | Step) -> SafeString:
        return pretty_json(row.input)

    @admin.display(description="output")
    def output_json(self, row: Execution | Step) -> SafeString:
        return pretty_json(row.output)

    @admin.display(description="error")
    def error_json(self, row: Execution | Step) -> SafeString:
        return pretty_json(row.error)


class AttemptFieldsMixin:
    """An attempt's fields, read-only, with its traceback escaped and folded."""

    fields: ClassVar[tuple[str, ...]] = ATTEMPT_FIELDS
    readonly_fields: ClassVar[tuple[str, ...]] = ATTEMPT_FIELDS

    @admin.display(description="traceback")
    def traceback(self, attempt: Attempt) -> SafeString | str:
        return traceback_html(attempt)


class AttemptInline(AttemptFieldsMixin, ReadOnlyMixin, admin.TabularInline):  # type: ignore[misc]  # tuples, as the admin takes them
    model = Attempt
    extra = 0


class StepInline(PayloadMixin, ReadOnlyMixin, admin.TabularInline):
    model = Step
    fk_name = "execution"
    extra = 0
    show_change_link = True
    fields = (
        "name",
        "status",
        "input_json",
        "output_json",
        "attempts_list",
        "started_at",
        "finished_at",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Step]:
        return super().get_queryset(request).prefetch_related("attempts")

    @admin.display(description="attempts")
    def attempts_list(self, step: Step) -> SafeString | str:
        """Each attempt in a line; the step's own page shows the tracebacks."""
        rows = [
            (attempt.number, attempt.status, _attempt_error(attempt))
            for attempt in step.attempts.all()
        ]
        return format_html_join("", "<div>#{} {}{}</div>", rows) or "-"


def _attempt_error(attempt: Attempt) -> str:
    return f": {attempt.error_type}: {attempt.error_message}" if attempt.error_type else ""


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
        return format_html('<a href="{}">{}</a>', url, cast(Step, event.consumed_by).name)


class EventInline(EventFieldsMixin, ReadOnlyMixin, admin.TabularInline):
    model = Event
    extra = 0
    fields = ("type", "payload_json", "created_at", "consumer", "consumed_at")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Event]:
        return super().get_queryset(request).select_related("consumed_by")


@admin.register(Execution)
class ExecutionAdmin(PayloadMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("id", "workflow", "binding", "status", "created_at", "finished_at")
    list_filter = ("workflow", "status", HasParentFilter)
    # UUID lookups ignore dashes on every database: a full id or any part of one matches.
    search_fields = ("id", "idempotency_key")
    search_help_text = "An execution id (or part of one), or an idempotency key."
    show_full_result_count = False
    list_per_page = 50
    ordering = ("-id",)
    fields = (
        "id",
        "binding",
        "workflow",
        "status",
        "idempotency_key",
        "rerun_of_link",
        "parent_link",
        "children_link",
        "created_at",
        "started_at",
        "finished_at",
        "wake_at",
        "run_count",
        "input_json",
        "output_json",
        "error_json",
    )
    readonly_fields = fields
    inlines = (StepInline, EventInline)
    actions = ("cancel_selected", "rerun_selected")

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        # "The children of X", linked from an execution's page and the dashboard.
        return lookup == "parent__id__exact" or super().lookup_allowed(lookup, value, request)

    def has_run_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(RUN_PERMISSION)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {"can_run": self.has_run_permission(request), **(extra_context or {})}
        return super().changelist_view(request, context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {"can_run": self.has_run_permission(request), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, context)

    def view_on_site(self, execution: Execution) -> str | None:
        try:
            return reverse("dashboard:execution_detail", args=[execution.id])
        except NoReverseMatch:
            return None

    @admin.display(description="rerun of")
    def rerun_of_link(self, execution: Execution) -> SafeString | str:
        return execution_link(execution.rerun_of_id) if execution.rerun_of_id else "-"

    @admin.display(description="parent")
    def parent_link(self, execution: Execution) -> SafeString | str:
        if not execution.parent_id:
            return "- (top-level)"
        index = "" if execution.parent_index is None else f" #{execution.parent_index}"
        return format_html(
            "{} (step {}{})", execution_link(execution.parent_id), execution.parent_step, index
        )

    @admin.display(description="children")
    def children_link(self, execution: Execution) -> SafeString | str:
        count = Execution.objects.filter(parent_id=execution.id).count()
        if not count:
            return "-"
        label = f"{count} child execution{'s' if count != 1 else ''}"
        return format_html('<a href="{}">{}</a>', children_url(execution.id), label)

    @admin.action(description="Cancel selected executions", permissions=["run"])
    def cancel_selected(
        self, request: HttpRequest, queryset: QuerySet[Execution]
    ) -> HttpResponse | None:
        for execution_id in queryset.values_list("id", flat=True):
            try:
                runtime.cancel_execution(execution_id)
            except ExecutionAlreadyFinished as error:
                self.message_user(request, f"Not cancelled: {error}.", messages.WARNING)
            except PloyError as error:
                self.message_user(request, f"Not cancelled: {error}.", messages.ERROR)
            else:
                link = execution_link(execution_id)
                self.message_user(request, format_html("Cancelled {}.", link), messages.SUCCESS)
        return _back_to(request)

    @admin.action(description="Rerun selected executions", permissions=["run"])
    def rerun_selected(
        self, request: HttpRequest, queryset: QuerySet[Execution]
    ) -> HttpResponse | None:
        for execution_id in queryset.values_list("id", flat=True):
            try:
                result = runtime.rerun_execution(execution_id)
            except PloyError as error:
                self.message_user(request, f"Not rerun {execution_id}: {error}.", messages.ERROR)
            else:
                message = format_html(
                    "Rerun of {} started as {}.",
                    execution_link(execution_id),
                    execution_link(result.execution_id),
                )
                self.message_user(request, message, messages.SUCCESS)
        return _back_to(request)

    def get_urls(self) -> list[URLPattern]:
        trigger = path(
            "trigger/",
            self.admin_site.admin_view(self.trigger_view),
            name="engine_execution_trigger",
        )
        return [trigger, *super().get_urls()]

    def trigger_view(self, request: HttpRequest) -> HttpResponse:
        """Pick a binding, type a JSON input, land on the new execution's page."""
        if not self.has_run_permission(request):
            raise PermissionDenied("triggering needs the change_execution permission")
        form = TriggerForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                result = runtime.trigger(form.cleaned_data["binding"], form.cleaned_data["input"])
            except PloyError as error:  # too large, or ploy.yaml changed under the form
                form.add_error("input", str(error))
            else:
                link = execution_link(result.execution_id)
                self.message_user(request, format_html("Started {}.", link), messages.SUCCESS)
                return redirect("admin:engine_execution_change", result.execution_id)
        return self._trigger_page(request, form)

    def _trigger_page(self, request: HttpRequest, form: TriggerForm) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Trigger a workflow",
            "form": form,
        }
        return TemplateResponse(request, "admin/engine/execution/trigger.html", context)


def _back_to(request: HttpRequest) -> HttpResponse | None:
    """To the execution's page when the action came from there; else the list, as usual."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return HttpResponseRedirect(target)
    return None


@admin.register(Step)
class StepAdmin(PayloadMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("name", "execution", "status", "started_at", "finished_at")
    list_filter = ("execution__workflow", "status")
    search_fields = ("execution__id", "name")
    search_help_text = "An execution id (or part of one), or a step name."
    show_full_result_count = False
    list_select_related = ("execution",)
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
class AttemptAdmin(AttemptFieldsMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "step",
        "number",
        "status",
        "error_type",
        "started_at",
        "finished_at",
        "worker",
    )
    list_filter = ("step__execution__workflow", "status")
    search_fields = ("step__execution__id", "step__name", "error_type", "worker")
    search_help_text = (
        "An execution id (or part of one), a step name, an error type or a worker id."
    )
    show_full_result_count = False
    list_select_related = ("step",)
    fields = ("step", *ATTEMPT_FIELDS)
    readonly_fields = fields


@admin.register(Event)
class EventAdmin(EventFieldsMixin, ReadOnlyMixin, admin.ModelAdmin):
    """Events as they were sent; they change only when a waiting step receives them."""

    list_display = ("id", "execution", "type", "created_at", "consumer", "consumed_at")
    list_filter = ("type",)
    search_fields = ("execution__id", "type")
    search_help_text = "An execution id (or part of one), or an event type."
    show_full_result_count = False
    list_select_related = ("execution", "consumed_by")
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
