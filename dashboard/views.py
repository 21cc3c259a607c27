"""Dashboard pages. Reads go through engine.queries and dashboard.queries; every state change
goes through engine.runtime, as the API's do. htmx only enhances: each URL also answers a plain
browser with a whole page."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseLocation, HttpResponseStopPolling
from django_htmx.middleware import HtmxDetails

from dashboard import execution_reads, queries
from dashboard.forms import SendEventForm, TriggerForm, pretty_input
from dashboard.presenters import ExecutionPage, load
from dashboard.values import pretty
from engine import events, fingerprints, registry, runtime
from engine.errors import ExecutionAlreadyFinished, ExecutionNotFound, PloyError
from engine.models import Execution, ExecutionStatus
from engine.queries import InvalidQuery, parse_execution_id

COUNTERS_WINDOW = timedelta(hours=1)
ACTIVITY_WINDOW = timedelta(hours=24)
# Sent by dashboard.js with each refresh once the user has typed in the "Send event" form: the
# refreshed page then keeps the form as it is in the browser (hx-preserve).
KEEP_FORM_HEADER = "X-Keep-Event-Form"
LIST_TEMPLATE = "dashboard/execution_list.html"
DETAIL_TEMPLATE = "dashboard/execution_detail.html"


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def refreshes(request: HtmxHttpRequest, target: str) -> bool:
    """An htmx request for one region of the page (not a history restore, which needs it all)."""
    htmx = request.htmx
    return bool(htmx) and htmx.target == target and not htmx.history_restore_request


def open_in_main(url: str) -> HttpResponseLocation:
    """Go to `url` without a full reload: htmx fetches the page and swaps its <main>."""
    return HttpResponseLocation(url, target="#main", select="#main", swap="outerHTML")


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
def execution_list(request: HtmxHttpRequest) -> HttpResponse:
    context = list_context(request)
    if refreshes(request, "executions"):
        return render(request, f"{LIST_TEMPLATE}#refresh", context)
    form = TriggerForm(initial=trigger_initial(request))
    return render(request, LIST_TEMPLATE, {**context, "form": form})


def list_context(request: HttpRequest) -> dict[str, object]:
    filters = list_filters(request.GET)
    cursor = request.GET.get("cursor") or None
    try:
        page = queries.execution_page(filters, cursor=cursor)
        problem = None
    except InvalidQuery as error:
        page, problem = queries.ListPage(rows=[], next_cursor=None), str(error)
    return {
        "page": page,
        "problem": problem,
        "filters": filters,
        "cursor": cursor,
        "filtered": filters.is_set,
        "workflows": workflow_names(filters.workflow),
        "statuses": list(ExecutionStatus.values),
        "counts": queries.counts_by_status(timezone.now() - COUNTERS_WINDOW),
        "poll_url": request.get_full_path(),
        "next_url": page_url(request, page.next_cursor) if page.next_cursor else None,
        "first_url": page_url(request, None) if cursor else None,
    }


def list_filters(query: QueryDict) -> queries.ListFilters:
    """The list's filters as its URL (or a form repeating them) gives them."""
    return queries.ListFilters(
        workflow=query.get("workflow", "").strip(),
        status=query.get("status", "").strip(),
        search=query.get("q", "").strip(),
        parent=query.get("parent", "").strip(),
    )


def workflow_names(selected: str) -> list[str]:
    names = [binding.name for binding in registry.current().config.workflows]
    if selected and selected not in names:
        names.append(selected)
    return list(dict.fromkeys(names))


def page_url(request: HttpRequest, cursor: str | None) -> str:
    query = request.GET.copy()
    query.pop("cursor", None)
    if cursor:
        query["cursor"] = cursor
    return f"{request.path}?{query.urlencode()}" if query else request.path


def trigger_initial(request: HttpRequest) -> dict[str, object]:
    """?trigger=BINDING&from=ID pre-fills the form with that execution's input ("edit & run")."""
    initial: dict[str, object] = {}
    if request.GET.get("trigger"):
        initial["binding"] = request.GET["trigger"]
    if request.GET.get("from"):
        with contextlib.suppress(ExecutionNotFound):
            initial["input"] = pretty_input(execution_input(request.GET["from"]))
    return initial


def execution_input(execution_id: str) -> object:
    inputs = Execution.objects.filter(id=parse_execution_id(execution_id)).values_list("input")
    row = inputs.first()
    if row is None:
        raise ExecutionNotFound(execution_id)
    return row[0]


@require_POST
def trigger_execution(request: HtmxHttpRequest) -> HttpResponse:
    form = TriggerForm(request.POST)
    if form.is_valid():
        try:
            result = runtime.trigger(form.cleaned_data["binding"], form.cleaned_data["input"])
        except PloyError as error:  # unknown workflow, input not JSON-able or too large
            form.add_error("input", str(error))
        else:
            url = reverse("dashboard:execution_detail", args=[result.execution_id])
            return open_in_main(url) if request.htmx else redirect(url)
    if request.htmx:
        return render(request, f"{LIST_TEMPLATE}#trigger-form", {"form": form}, status=422)
    context = {**list_context(request), "form": form}
    return render(request, LIST_TEMPLATE, context, status=422)


@require_GET
@vary_on_headers("HX-Request", "HX-Target", KEEP_FORM_HEADER)
def execution_detail(request: HtmxHttpRequest, execution_id: str) -> HttpResponse:
    try:
        # "more", or the live refresh of every step loaded with it (dashboard.js)
        more = refreshes(request, "steps-more") or refreshes(request, "steps-extra")
        after = steps_after(request)
        page = load(
            execution_id,
            now=timezone.now(),
            full=request.GET.get("full") == "1",
            after=after,
            steps_only=more,
            limit=execution_reads.window_size(
                after, position_param(request, "through") if more else None
            ),
        )
    except ExecutionNotFound:
        if refreshes(request, "live"):
            return HttpResponseStopPolling("<p class='notice'>This execution no longer exists.</p>")
        return not_found(request, execution_id)
    if more:
        return render(request, f"{DETAIL_TEMPLATE}#steps-page", steps_context(request, page))
    if not refreshes(request, "live"):
        return render(request, DETAIL_TEMPLATE, detail_context(request, page))
    if page.execution.is_finished:
        html = render_to_string(f"{DETAIL_TEMPLATE}#live", detail_context(request, page), request)
        return HttpResponseStopPolling(html)
    if request.GET.get("v") == page.fingerprint:
        return HttpResponse(status=204)
    return render(request, f"{DETAIL_TEMPLATE}#live", detail_context(request, page))


def steps_after(request: HttpRequest) -> int | None:
    """?steps_after=N: the page's steps start after position N (0-based); a bad value is an
    unknown page, not an error worth more than the first steps."""
    return position_param(request, "steps_after")


def position_param(request: HttpRequest, name: str) -> int | None:
    value = request.GET.get(name, "")
    return int(value) if value.isdigit() and len(value) < 10 else None


def detail_context(
    request: HttpRequest, page: ExecutionPage, *, event_form: SendEventForm | None = None
) -> dict[str, object]:
    """`event_form` answers the user's own submission, and replaces the one on the page; else
    a refresh keeps the form the user has typed in, and renews an untouched one."""
    query = request.GET.copy()
    query["v"] = page.fingerprint
    context = steps_context(request, page)
    return {
        **context,
        "poll_url": f"{context['first_url']}?{query.urlencode()}",
        "event_form": event_form or new_event_form(page),
        "keep_event_form": event_form is None and request.headers.get(KEEP_FORM_HEADER) == "true",
        # The current code's fingerprint, when it differs from the execution's own.
        "code_now": fingerprints.changed(
            page.execution.code_fingerprint, registry.current().fingerprint(page.execution.workflow)
        ),
    }


def steps_context(request: HttpRequest, page: ExecutionPage) -> dict[str, object]:
    """What the step cards need, all the answer to "more" renders."""
    # The page's own address, also when this answers an action posted elsewhere.
    path = reverse("dashboard:execution_detail", args=[page.execution.id])
    full_query = request.GET.copy()
    full_query.pop("v", None)
    full_query["full"] = "1"
    more_query = request.GET.copy()
    for name in ("v", "full"):
        more_query.pop(name, None)
    more_query["steps_after"] = str(page.next_after)
    return {
        "page": page,
        "execution": page.execution,
        "full_url": f"{path}?{full_query.urlencode()}",
        "more_url": f"{path}?{more_query.urlencode()}" if page.next_after is not None else None,
        "first_url": path,
        # Reversed once here rather than in each step and attempt of the page.
        "value_path": reverse("dashboard:stored_value", args=[page.execution.id]),
        "rerun_url": reverse("dashboard:rerun", args=[page.execution.id]),
        "workers_url": reverse("dashboard:worker_list"),
    }


@require_GET
def step_attempts(request: HtmxHttpRequest, execution_id: str, position: int) -> HttpResponse:
    """Every attempt of one step ("show all N attempts"); the page shows the last few."""
    try:
        step = execution_reads.step_at(execution_id, position - 1)
    except ExecutionNotFound:
        return not_found(request, execution_id)
    item = {
        "step": step,
        "position": position,
        "anchor": f"step-{position}",
        "attempts": list(step.attempts.all()),
        "hidden_attempts": 0,
    }
    context = {
        "item": item,
        "step": step,
        "execution": {"id": step.execution_id},
        "workers_url": reverse("dashboard:worker_list"),
    }
    template = f"{DETAIL_TEMPLATE}#attempts" if request.htmx else "dashboard/step_attempts.html"
    return render(request, template, context)


@require_GET
def stored_value(request: HtmxHttpRequest, execution_id: str) -> HttpResponse:
    """The whole input or output of an execution (?step=N: of its step N), which the page
    shows cut: htmx swaps it in; a plain link gets the JSON itself."""
    field = request.GET.get("of", "")
    step = request.GET.get("step", "")
    position = int(step) - 1 if step.isdigit() and 0 < len(step) < 10 else None
    try:
        value = execution_reads.stored_value(execution_id, field, position)
    except ExecutionNotFound:
        return not_found(request, execution_id)
    if not request.htmx:
        return JsonResponse(value, safe=False, json_dumps_params={"indent": 2})
    prefix = f"step-{position + 1}" if position is not None else "execution"
    context = {
        "value": pretty(value, full=True),
        "label": f"{'Step' if position is not None else 'Execution'} {field}",
        "value_id": f"{prefix}-{field}",
    }
    return render(request, f"{DETAIL_TEMPLATE}#value", context)


def new_event_form(page: ExecutionPage) -> SendEventForm:
    """Empty, but for the type that a step waits for now, if there is one."""
    return SendEventForm(initial={"type": next(iter(page.waiting_for), "")})


def not_found(request: HttpRequest, execution_id: str) -> HttpResponse:
    """The friendly 404 whatever DEBUG says: an execution id is often pasted by hand."""
    return render(request, "404.html", {"execution_id": execution_id}, status=404)


@require_POST
def cancel_execution(request: HtmxHttpRequest, execution_id: str) -> HttpResponse:
    try:
        runtime.cancel_execution(execution_id)
    except ExecutionNotFound:
        return not_found(request, execution_id)
    except ExecutionAlreadyFinished as error:
        messages.info(
            request, f"Nothing to cancel: the execution had already ended ({error.status})."
        )
    else:
        messages.success(request, "Execution cancelled.")
    if not request.htmx:
        return redirect("dashboard:execution_detail", execution_id=execution_id)
    page = load(execution_id, now=timezone.now())
    return render(request, f"{DETAIL_TEMPLATE}#live", detail_context(request, page))


@require_POST
def send_event(request: HtmxHttpRequest, execution_id: str) -> HttpResponse:
    """Send an event to a running execution, through engine.events as the API does."""
    form = SendEventForm(request.POST)
    if form.is_valid():
        event_type = form.cleaned_data["type"]
        try:
            events.send_event(execution_id, event_type, form.cleaned_data["payload"])
        except ExecutionNotFound:
            return not_found(request, execution_id)
        except ExecutionAlreadyFinished:  # the page shows how it ended, and no form any more
            return event_refused(request, execution_id, form)
        except events.InvalidEvent as error:
            form.add_error("type", str(error))
        except PloyError as error:  # the payload is too large, or holds what JSON cannot
            form.add_error("payload", str(error))
        else:
            messages.success(request, f"Event {event_type!r} sent.")
            return event_sent(request, execution_id)
    return event_refused(request, execution_id, form)


def event_sent(request: HtmxHttpRequest, execution_id: str) -> HttpResponse:
    """The whole live region again, with an empty form: the page shows what the event did (or
    that the execution had ended meanwhile)."""
    if not request.htmx:
        return redirect("dashboard:execution_detail", execution_id=execution_id)
    page = load(execution_id, now=timezone.now())
    context = detail_context(request, page, event_form=new_event_form(page))
    response = render(request, f"{DETAIL_TEMPLATE}#live", context)
    response["HX-Retarget"] = "#live"
    response["HX-Reswap"] = "outerHTML"
    return response


def event_refused(request: HtmxHttpRequest, execution_id: str, form: SendEventForm) -> HttpResponse:
    """The form again with its errors, in place (htmx), or in the whole page."""
    try:
        page = load(execution_id, now=timezone.now())
    except ExecutionNotFound:
        return not_found(request, execution_id)
    execution = page.execution
    if execution.is_finished:  # the page has no form any more: say so above how it ended
        messages.warning(
            request, f"Not sent: the execution had already ended ({execution.status})."
        )
        return event_sent(request, execution_id)
    context = detail_context(request, page, event_form=form)
    template = f"{DETAIL_TEMPLATE}#send-event" if request.htmx else DETAIL_TEMPLATE
    return render(request, template, context, status=422)


@require_POST
def rerun_execution(request: HtmxHttpRequest, execution_id: str) -> HttpResponse:
    """A rerun with the same input; with `from_step` ("Rerun from here"), from that step."""
    from_step = request.POST.get("from_step") or None
    try:
        result = runtime.rerun_execution(execution_id, from_step=from_step)
    except ExecutionNotFound:
        return not_found(request, execution_id)
    except PloyError as error:  # its workflow left ploy.yaml, or the step cannot start one
        messages.error(request, f"Could not rerun: {error}")
        url = reverse("dashboard:execution_detail", args=[execution_id])
    else:
        how = f" from step {from_step!r}, reusing the steps before it" if from_step else ""
        messages.success(request, f"Rerun started with the same input{how}.")
        url = reverse("dashboard:execution_detail", args=[result.execution_id])
    return open_in_main(url) if request.htmx else redirect(url)


@require_GET
def workflow_list(request: HtmxHttpRequest) -> HttpResponse:
    bindings = registry.current().config.workflows
    activity = queries.workflow_activity(
        [binding.name for binding in bindings], since=timezone.now() - ACTIVITY_WINDOW
    )
    rows = [{"binding": binding, "activity": activity[binding.name]} for binding in bindings]
    return render(
        request,
        "dashboard/workflow_list.html",
        {"rows": rows, "statuses": list(ExecutionStatus.values)},
    )
