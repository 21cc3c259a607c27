"""The admin's "Rerun from here": a page to pick the step (linked from each step of an
execution's page), posting to engine.runtime as the dashboard and the API do."""

from __future__ import annotations

from html import escape
from typing import Any, cast
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.forms.utils import flatatt
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from engine import runtime
from engine.errors import ExecutionNotFound, PloyError
from engine.models import Execution, Step
from engine.queries import parse_execution_id
from engine.reruns import can_start_from, startable


class PlainSelect(forms.Select):
    """The options written in one pass: Django renders each through a template of its own, a
    second or more for the 10,000 steps of a big execution."""

    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None
    ) -> SafeString:
        chosen = "" if value is None else str(value)
        options = "".join(
            f'<option value="{escape(str(key))}"{" selected" if str(key) == chosen else ""}>'
            f"{escape(str(label))}</option>"
            for key, label in self.choices
        )
        built = flatatt(self.build_attrs(self.attrs, attrs))
        return format_html('<select name="{}"{}>{}</select>', name, built, mark_safe(options))


class RerunFromStepForm(forms.Form):
    from_step = forms.ChoiceField(
        widget=PlainSelect,
        label="Rerun from step",
        help_text="The steps before it are reused as stored (their functions do not run again); "
        "this step and what follows run in a new execution, with the same input.",
    )

    def __init__(
        self, data: QueryDict | None = None, *, steps: list[str], initial: dict[str, str]
    ) -> None:
        super().__init__(data, initial=initial)
        if len(steps) > CHOICES_SHOWN:
            # A list of thousands of options is half a megabyte to send and to scroll: the
            # step's name is typed instead (each step of the step list links here with it).
            self.fields["from_step"] = TypedStepName(steps, help_text=self.BIG_HELP)
            return
        field = self.fields["from_step"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(name, name) for name in steps]

    BIG_HELP = (
        "The name of the step, as the execution's page and its step list show it (its Rerun "
        "from here link fills it in). The steps before it are reused as stored; this step and "
        "what follows run in a new execution, with the same input."
    )


# Up to this many steps a rerun can start from are offered as a list; past it, a name is typed.
CHOICES_SHOWN = 500


class TypedStepName(forms.CharField):
    """A step's name, typed, and checked against the steps a rerun can start from."""

    def __init__(self, steps: list[str], **kwargs: Any) -> None:
        super().__init__(label="Rerun from step", max_length=200, **kwargs)
        self.widget.attrs.update(size=60, spellcheck="false")
        self.startable = set(steps)

    def clean(self, value: Any) -> str:
        name = str(super().clean(value))
        if name not in self.startable:
            raise forms.ValidationError(
                "%(name)s is not a step a rerun can start from: type the name of a step that "
                "ended, as the execution's step list shows it.",
                code="unknown_step",
                params={"name": repr(name)},
            )
        return name


def rerun_from_url(step: Step) -> str:
    url = reverse("admin:engine_execution_rerun_from", args=[step.execution_id])
    return f"{url}?{urlencode({'step': step.name})}"


class RerunFromStepAdminMixin(admin.ModelAdmin):
    """Adds /admin/engine/execution/<id>/rerun-from/ to the execution's admin."""

    def has_run_permission(self, request: HttpRequest) -> bool:
        raise NotImplementedError  # the execution's admin says who may rerun

    def get_urls(self) -> list[URLPattern]:
        view = path(
            "<path:object_id>/rerun-from/",
            self.admin_site.admin_view(self.rerun_from_view),
            name="engine_execution_rerun_from",
        )
        return [view, *super().get_urls()]

    def rerun_from_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not self.has_run_permission(request):
            raise PermissionDenied("rerunning needs the change_execution permission")
        try:
            execution = get_execution_row(object_id)
        except ExecutionNotFound as error:
            raise Http404(str(error)) from None
        rows = Step.objects.filter(execution=execution).order_by("position")
        # Rows that have what `startable` reads, without a model instance each (10,000 of them).
        states = rows.values_list("name", "status", "branch_of", named=True)
        steps = startable(cast("list[Step]", list(states)))
        initial = {"from_step": request.GET.get("step", "")}
        data = request.POST if request.method == "POST" else None
        form = RerunFromStepForm(data, steps=steps, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                result = runtime.rerun_execution(
                    execution.id, from_step=form.cleaned_data["from_step"]
                )
            except PloyError as error:
                form.add_error("from_step", str(error))
            else:
                message = format_html(
                    "Rerun of {} from step {} started as {}.",
                    execution.id,
                    form.cleaned_data["from_step"],
                    result.execution_id,
                )
                self.message_user(request, message, messages.SUCCESS)
                return redirect("admin:engine_execution_change", result.execution_id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": execution,
            "title": f"Rerun {execution.workflow} from a step",
            "form": form,
            "steps": steps,
        }
        return TemplateResponse(request, "admin/engine/execution/rerun_from.html", context)


class RerunFromStepInlineMixin:
    """A "Rerun from here" link on each step of the execution's page that can start one."""

    @admin.display(description="rerun")
    def rerun_from_link(self, step: Step) -> SafeString | str:
        if not step.pk or not can_start_from(step):
            return "-"
        return format_html('<a href="{}">Rerun from here</a>', rerun_from_url(step))

    @admin.display(description="reused from")
    def reused_from_link(self, step: Step) -> SafeString | str:
        if not step.reused_from:
            return "-"
        url = reverse("admin:engine_execution_change", args=[step.reused_from])
        return format_html('<a href="{}">{}</a>', url, step.reused_from)


def get_execution_row(execution_id: str) -> Execution:
    execution = Execution.objects.filter(pk=parse_execution_id(execution_id)).first()
    if execution is None:
        raise ExecutionNotFound(execution_id)
    return execution
