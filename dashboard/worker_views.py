"""The Workers page: each worker process, its heartbeat age by the database's clock, and the
executions it holds now; the table refreshes itself with htmx."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from dashboard.templatetags.dashboard import iso
from dashboard.values import format_duration
from dashboard.views import HtmxHttpRequest, refreshes
from engine import clock
from engine.models import WorkerStatus
from engine.worker_api import WorkerRecord, load_workers

TEMPLATE = "dashboard/worker_list.html"


@dataclass(frozen=True, kw_only=True)
class WorkerRow:
    worker: WorkerRecord
    anchor: str
    heartbeat_age: str
    last_seen: str


def heartbeat_age(last_seen_at: datetime, now: datetime) -> str:
    """Tenths of a second while it matters (live workers beat about every second)."""
    age = max(now - last_seen_at, timedelta(0))
    if age < timedelta(minutes=1):
        return f"{age.total_seconds():.1f} s ago"
    return f"{format_duration(age)} ago"


@require_GET
@vary_on_headers("HX-Request", "HX-Target")
def worker_list(request: HtmxHttpRequest) -> HttpResponse:
    now = clock.now()
    workers = load_workers(now)
    counts = Counter(worker.status for worker in workers)
    context = {
        "rows": [row_of(worker, now) for worker in workers],
        "counts": {status: counts[status] for status in WorkerStatus.values},
        "timeout": f"{settings.PLOY_WORKER_TIMEOUT_SECONDS:g}",
        "poll_url": request.get_full_path(),
    }
    if refreshes(request, "workers"):
        return render(request, f"{TEMPLATE}#workers", context)
    return render(request, TEMPLATE, context)


def row_of(worker: WorkerRecord, now: datetime) -> WorkerRow:
    return WorkerRow(
        worker=worker,
        anchor=f"worker-{worker.id}",
        heartbeat_age=heartbeat_age(worker.last_seen_at, now),
        last_seen=iso(worker.last_seen_at),
    )
