"""The Schedules page: each schedule of ploy.yaml's cron: section with its next tick, its last
run and how that run went, and pause and resume buttons; the table refreshes itself with htmx."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from dashboard.views import HtmxHttpRequest, refreshes
from engine import schedules
from engine.errors import ScheduleNotFound
from engine.models import Schedule

TEMPLATE = "dashboard/schedule_list.html"


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
def schedule_list(request: HtmxHttpRequest) -> HttpResponse:
    if refreshes(request, "schedules"):
        return render(request, f"{TEMPLATE}#schedules", context(request))
    return render(request, TEMPLATE, context(request))


def context(request: HtmxHttpRequest) -> dict[str, object]:
    rows: list[Schedule] = schedules.list_schedules()
    return {"rows": rows, "poll_url": request.path}


@require_POST
def pause_schedule(request: HtmxHttpRequest, name: str) -> HttpResponse:
    return act(request, name, schedules.pause, "Paused {}: no tick runs until it is resumed.")


@require_POST
def resume_schedule(request: HtmxHttpRequest, name: str) -> HttpResponse:
    return act(request, name, schedules.resume, "Resumed {}: it runs at its next tick.")


def act(
    request: HtmxHttpRequest, name: str, change: Callable[[str], Schedule], done: str
) -> HttpResponse:
    """Pause or resume through engine.schedules, as the API does; htmx gets the new table."""
    try:
        change(name)
    except ScheduleNotFound:
        return render(request, "404.html", {"request_path": request.path}, status=404)
    messages.success(request, done.format(name))
    if not request.htmx:
        return redirect("dashboard:schedule_list")
    return render(request, f"{TEMPLATE}#schedules", context(request))
