""" "Cancel all matching" and "Rerun all matching" on the executions list: a GET that names
the count and asks (an htmx dialog, or a page of its own without JavaScript), then a POST that
acts through engine.bulk, in batches, as the API's bulk calls do."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.contrib import messages
from django.db.models import QuerySet
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dashboard import queries
from dashboard.access import access_of, forbidden
from dashboard.views import HtmxHttpRequest, list_filters, open_in_main
from engine import bulk
from engine.models import Execution
from engine.queries import InvalidQuery

CONFIRM_TEMPLATE = "dashboard/bulk_confirm.html"


@dataclass(frozen=True, kw_only=True)
class BulkAction:
    name: str  # cancel, rerun
    verb: str  # what the button says
    done: str  # what the message after it says
    noun: str  # what it acts on

    def among(self, executions: QuerySet[Execution]) -> QuerySet[Execution]:
        return bulk.cancellable_among(executions) if self.name == "cancel" else executions

    def run(self, executions: QuerySet[Execution]) -> int:
        if self.name == "cancel":
            return bulk.cancel_matching(executions)
        return bulk.rerun_matching(executions)


ACTIONS = {
    "cancel": BulkAction(name="cancel", verb="Cancel", done="Cancelled", noun="running execution"),
    "rerun": BulkAction(name="rerun", verb="Rerun", done="Started a rerun of", noun="execution"),
}


def action_of(name: str) -> BulkAction:
    if name not in ACTIONS:
        raise Http404(f"no bulk action {name!r}: use cancel or rerun")
    return ACTIONS[name]


@require_GET
def confirm_bulk(request: HtmxHttpRequest, action: str) -> HttpResponse:
    """How many executions the list's filter matches for this action, and a button to go on."""
    chosen = action_of(action)
    if not access_of(request).may_act:
        return forbidden(request)
    filters = list_filters(request.GET)
    try:
        count, problem = chosen.among(queries.filtered_executions(filters)).count(), None
    except InvalidQuery as error:
        count, problem = 0, str(error)
    context = {
        "action": chosen,
        "filters": filters,
        "count": count,
        "problem": problem,
        "described": describe(filters),
        "list_url": list_url(filters),
    }
    template = f"{CONFIRM_TEMPLATE}#dialog" if request.htmx else CONFIRM_TEMPLATE
    return render(request, template, context)


@require_POST
def run_bulk(request: HtmxHttpRequest, action: str) -> HttpResponse:
    chosen = action_of(action)
    filters = list_filters(request.POST)
    try:
        count = chosen.run(queries.filtered_executions(filters))
    except InvalidQuery as error:
        messages.error(request, f"Nothing done: {error}")
    else:
        messages.success(request, f"{chosen.done} {count} execution{'s' if count != 1 else ''}.")
    url = list_url(filters)
    return open_in_main(url) if request.htmx else redirect(url)


def describe(filters: queries.ListFilters) -> str:
    """The filter in words, for the question."""
    parts = []
    if filters.workflow:
        parts.append(f"of workflow {filters.workflow}")
    if filters.status:
        parts.append(f"with status {filters.status}")
    if filters.search:
        parts.append(f"whose id starts with {filters.search}")
    if filters.parent:
        parts.append(f"started by {filters.parent}")
    return ", ".join(parts) if parts else "of every workflow (no filter)"


def list_url(filters: queries.ListFilters) -> str:
    """Back to the list with the same filters."""
    query = filter_query(filters)
    path = reverse("dashboard:execution_list")
    return f"{path}?{query}" if query else path


def filter_query(filters: queries.ListFilters) -> str:
    pairs = {
        "workflow": filters.workflow,
        "status": filters.status,
        "q": filters.search,
        "parent": filters.parent,
    }
    return urlencode({key: value for key, value in pairs.items() if value})
