"""Django admin: executions, steps, attempts and events are read-only; cancel, rerun and
trigger go through engine.runtime, as the API and the dashboard do. The execution admin lives
here; steps and attempts, events and workers each have a module of their own, registered by
importing them below."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString

from engine import event_admin, runtime, step_admin, worker_admin
from engine.admin_display import PayloadMixin, ReadOnlyMixin, children_url, execution_link
from engine.admin_reruns import RerunFromStepAdminMixin
from engine.admin_scale import BoundedListMixin, IdPrefixSearchMixin, workflow_filter
from engine.errors import ExecutionAlreadyFinished, PloyError
from engine.forms import TriggerForm
from engine.models import Execution

__all__ = ["RUN_PERMISSION", "ExecutionAdmin", "event_admin", "step_admin", "worker_admin"]

# Who may cancel, rerun and trigger, here and on the dashboard (dashboard.access): the ORM's
# change permission (superusers have it).
RUN_PERMISSION = "engine.change_execution"
# A key is unique per workflow: a search by one finds at most one execution per workflow.
KEYED_SHOWN = 100
# An invoke_many of a million children: its parent's page counts them up to this many.
CHILDREN_COUNTED = 10_000


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


@admin.register(Execution)
class ExecutionAdmin(
    RerunFromStepAdminMixin,
    BoundedListMixin,
    IdPrefixSearchMixin,
    PayloadMixin,
    ReadOnlyMixin,
    admin.ModelAdmin,
):
    list_display = ("id", "workflow", "binding", "status", "created_at", "finished_at")
    list_filter = (workflow_filter("workflow"), "status", HasParentFilter)
    # The start of an id is a range on the primary key; a key matches exactly, on its index.
    search_fields = ("id", "idempotency_key")
    search_help_text = "An execution id or its first characters, or a whole idempotency key."
    list_per_page = 50
    list_deferred = ("input", "output", "error")
    ordering = ("-id",)
    fields = (
        "id",
        "binding",
        "workflow",
        "status",
        "idempotency_key",
        "rerun_of_link",
        "from_step",
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
    inlines = (step_admin.StepInline, event_admin.EventInline)
    actions = ("cancel_selected", "rerun_selected")

    def word_condition(self, word: str) -> Q:
        """The start of an id, or a whole idempotency key. The key's ids are read first (its own
        index) and passed as values: an OR with a subquery makes PostgreSQL read the whole
        primary key, while an OR of a range and a few values stays on it."""
        keyed = Execution.objects.filter(idempotency_key=word).values_list("id", flat=True)
        ids = list(keyed[:KEYED_SHOWN])
        condition = super().word_condition(word)
        return condition | Q(id__in=ids) if ids else condition

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
        children = Execution.objects.filter(parent_id=execution.id).values("pk")
        count = children[: CHILDREN_COUNTED + 1].count()
        if not count:
            return "-"
        label = f"{count} child execution{'s' if count != 1 else ''}"
        if count > CHILDREN_COUNTED:
            label = f"over {CHILDREN_COUNTED:,} child executions"
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


from engine import schedule_admin  # noqa: E402,F401  (registers the Schedule admin)
