"""Times each page and endpoint a user opens, against the loaded history: Django's test client
in this process (server time: middleware, views, queries, templates; no network), DEBUG off."""

from __future__ import annotations

import re
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from bench.scale_data import Loaded
from engine.queries import encode_cursor

WARM_UP = 2
HTMX = {"HX-Request": "true"}


@dataclass(frozen=True, kw_only=True)
class Probe:
    name: str
    path: str
    goal_ms: float | None  # p95; None where the cost follows what is asked for (a whole 1 MB value)
    headers: dict[str, str] | None = None
    admin: bool = False


@dataclass(frozen=True, kw_only=True)
class Timing:
    name: str
    path: str
    goal_ms: float | None
    p50_ms: float
    p95_ms: float
    queries: int
    kilobytes: float
    status: int

    @property
    def verdict(self) -> str:
        if self.status != 200:
            return f"HTTP {self.status}"
        if self.goal_ms is None:
            return "–"
        return "yes" if self.p95_ms <= self.goal_ms else "no"

    def as_dict(self) -> dict:
        return asdict(self)


def probes(loaded: Loaded, client: Client) -> list[Probe]:
    """The pages, in the order a user meets them; cursors and prefixes taken from the data."""
    first = client.get("/api/executions?limit=50").json()
    small, big, retried, values = loaded.small, loaded.big, loaded.retried, loaded.big_values
    middle = encode_cursor(uuid.UUID(small))
    prefix = small.replace("-", "")[:8]
    htmx_more = {**HTMX, "HX-Target": "steps-more"}
    return [
        Probe(name="dashboard list", path="/", goal_ms=50),
        Probe(name="list by workflow", path="/?workflow=order_flow", goal_ms=50),
        Probe(name="list by status", path="/?status=failed", goal_ms=50),
        Probe(
            name="list by workflow and status",
            path="/?workflow=report_flow&status=cancelled",
            goal_ms=50,
        ),
        Probe(name="list search by id prefix", path=f"/?q={prefix}", goal_ms=50),
        Probe(name="list page 2", path=f"/?cursor={first['nextCursor']}", goal_ms=50),
        Probe(name="list page in the middle", path=f"/?cursor={middle}", goal_ms=50),
        Probe(
            name="list refresh with counters (every 3 s)",
            path="/",
            goal_ms=50,
            headers={**HTMX, "HX-Target": "executions"},
        ),
        Probe(name="execution page: 1 step", path=f"/executions/{small}/", goal_ms=50),
        Probe(name="execution page: 10,000 steps", path=f"/executions/{big}/", goal_ms=100),
        Probe(
            name="execution page: a step of 100 attempts",
            path=f"/executions/{retried}/",
            goal_ms=100,
        ),
        Probe(name="execution page: 1 MB values", path=f"/executions/{values}/", goal_ms=100),
        Probe(
            name="next 50 steps of 10,000 (htmx)",
            path=f"/executions/{big}/?steps_after=4999",
            goal_ms=50,
            headers=htmx_more,
        ),
        Probe(
            name="all 100 attempts of a step (htmx)",
            path=f"/executions/{retried}/steps/1/attempts/",
            goal_ms=50,
            headers={**HTMX, "HX-Target": "step-1-attempts"},
        ),
        Probe(
            name="a whole 1 MB step output (htmx)",
            path=f"/executions/{values}/value/?of=output&step=1",
            goal_ms=None,
            headers={**HTMX, "HX-Target": "step-1-output"},
        ),
        Probe(name="workflows page", path="/workflows/", goal_ms=50),
        Probe(name="workers page", path="/workers/", goal_ms=50),
        Probe(name="admin changelist", path="/admin/engine/execution/", goal_ms=50, admin=True),
        Probe(
            name="admin search by id prefix",
            path=f"/admin/engine/execution/?q={prefix}",
            goal_ms=50,
            admin=True,
        ),
        Probe(
            name="admin change page",
            path=f"/admin/engine/execution/{small}/change/",
            goal_ms=50,
            admin=True,
        ),
        Probe(name="API list", path="/api/executions", goal_ms=50),
        Probe(
            name="API list by workflow and status",
            path="/api/executions?workflow=order_flow&status=failed",
            goal_ms=50,
        ),
        Probe(name="API execution: 1 step", path=f"/api/executions/{small}", goal_ms=50),
        Probe(name="API execution: 10,000 steps", path=f"/api/executions/{big}", goal_ms=50),
        Probe(
            name="API steps page (100 of 10,000)",
            path=f"/api/executions/{big}/steps?cursor=4999&limit=100",
            goal_ms=50,
        ),
        Probe(name="API workers", path="/api/workers", goal_ms=50),
        Probe(name="/metrics", path="/metrics", goal_ms=50),
        # The list's counters under the busy last hour (a quarter of the load), with filters
        # whose rows are all in that hour; "workflows page" above counts its 24 hours.
        Probe(
            name="list refresh of the running, with counters (busy hour)",
            path="/?status=running",
            goal_ms=50,
            headers={**HTMX, "HX-Target": "executions"},
        ),
        Probe(
            name="list refresh of one workflow's failures, with counters (busy hour)",
            path="/?workflow=data_processing&status=failed",
            goal_ms=50,
            headers={**HTMX, "HX-Target": "executions"},
        ),
        *admin_probes(loaded),
    ]


def admin_probes(loaded: Loaded) -> list[Probe]:
    """The admin's other pages: the big executions' change pages, and the step, attempt, event
    and worker lists and pages over the whole history."""
    from engine.models import Attempt, Step

    big, retried = loaded.big, loaded.retried
    prefix = loaded.small.replace("-", "")[:8]
    step = Step.objects.filter(execution_id=retried).values_list("id", flat=True).first()
    attempt = Attempt.objects.filter(step_id=step).order_by("-number").values_list("id", flat=True)
    steps, attempts = "/admin/engine/step/", "/admin/engine/attempt/"

    def page(name: str, path: str) -> Probe:
        return Probe(name=f"admin {name}", path=path, goal_ms=50, admin=True)

    return [
        page("change page: 10,000 steps", f"/admin/engine/execution/{big}/change/"),
        page("change page: a step of 100 attempts", f"/admin/engine/execution/{retried}/change/"),
        page("step list", steps),
        page("change page: 1 MB values", f"/admin/engine/execution/{loaded.big_values}/change/"),
        page("rerun-from page: 10,000 steps", f"/admin/engine/execution/{big}/rerun-from/"),
        page("step list by status", f"{steps}?status__exact=failed"),
        page("step list by a rare status", f"{steps}?status__exact=running"),
        page("steps of the 10,000-step execution, page 100", f"{steps}?execution={big}&p=100"),
        page("step list by workflow", f"{steps}?execution__workflow=report_flow"),
        page("step list search by id prefix", f"{steps}?q={prefix}"),
        page("step list search by a rare name", f"{steps}?q=step-05000"),
        page("step page: 100 attempts", f"{steps}{step}/change/"),
        page("attempt list", attempts),
        page("attempt list by status", f"{attempts}?status__exact=failed"),
        page("attempt list search by id prefix", f"{attempts}?q={prefix}"),
        page("attempt list search by error type", f"{attempts}?q=ValueError"),
        page("attempt page", f"{attempts}{attempt.first()}/change/"),
        page("event list", "/admin/engine/event/"),
        page("worker list", "/admin/engine/worker/"),
    ]


def measure(probe: Probe, client: Client, requests: int) -> Timing:
    """`requests` timed GETs after WARM_UP untimed ones; then one more to count queries."""
    headers = probe.headers or {}

    def get() -> object:
        return client.get(probe.path, headers=headers)

    for _ in range(WARM_UP):
        get()
    times = []
    status = 200
    for _ in range(requests):
        began = time.perf_counter()
        response = get()
        times.append((time.perf_counter() - began) * 1000)
        if response.status_code not in (200, 204):
            status = response.status_code
    with CaptureQueriesContext(connection) as queries:
        response = get()
    return Timing(
        name=probe.name,
        path=probe.path,
        goal_ms=probe.goal_ms,
        p50_ms=statistics.median(times),
        p95_ms=percentile(times, 95),
        queries=len(queries),
        kilobytes=len(response.content) / 1024,
        status=status,
    )


def percentile(values: list[float], rank: float) -> float:
    """Nearest-rank percentile: with 30 requests, p95 is the second slowest."""
    ordered = sorted(values)
    index = max(int(round(rank / 100 * len(ordered) + 0.5)) - 1, 0)
    return ordered[min(index, len(ordered) - 1)]


def time_pages(
    loaded: Loaded, *, requests: int, only: str = "", say: Callable[[str], None]
) -> list[Timing]:
    from django.contrib.auth.models import User

    client = Client(HTTP_HOST="localhost")
    admin = Client(HTTP_HOST="localhost")
    user, _ = User.objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    admin.force_login(user)
    pattern = re.compile(only) if only else None
    results = []
    for probe in probes(loaded, client):
        if pattern and not pattern.search(probe.name):
            continue
        timing = measure(probe, admin if probe.admin else client, requests)
        say(f"  {timing.name}: p50 {timing.p50_ms:.1f} ms, p95 {timing.p95_ms:.1f} ms")
        results.append(timing)
    return results
