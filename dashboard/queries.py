"""Dashboard-only reads: each answers in one query, whatever the number of rows behind it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q, QuerySet, Subquery

from dashboard.counters import counts_since
from engine.errors import ExecutionNotFound
from engine.models import Event, Execution, ExecutionStatus, Step, StepStatus
from engine.queries import (
    InvalidQuery,
    filter_executions,
    id_prefix_range,
    keyset_page,
    parse_execution_id,
)

PAGE_SIZE = 50
# The execution page shows this many children and events; the rest is a link away.
CHILDREN_SHOWN = 50
EVENTS_SHOWN = 50
# The list shows no payloads: leave the JSON columns in the database.
LIST_DEFERRED = ("input", "output", "error")


@dataclass(frozen=True, kw_only=True)
class ListFilters:
    workflow: str = ""
    status: str = ""
    search: str = ""
    parent: str = ""

    @property
    def is_set(self) -> bool:
        return bool(self.workflow or self.status or self.search or self.parent)


@dataclass(frozen=True, kw_only=True)
class Progress:
    done: int
    total: int


@dataclass(frozen=True, kw_only=True)
class ListRow:
    execution: Execution
    progress: Progress


@dataclass(frozen=True, kw_only=True)
class ListPage:
    rows: list[ListRow]
    next_cursor: str | None


def id_range(search: str) -> tuple[uuid.UUID, uuid.UUID]:
    """Every id starting with `search`: a range on the primary key, so any prefix stays fast."""
    bounds = id_prefix_range(search)
    if bounds is None:
        raise InvalidQuery(
            f"{search.strip()!r} is not (the start of) an execution id: use hex digits and dashes"
        )
    return bounds


def filtered_executions(filters: ListFilters) -> QuerySet[Execution]:
    if "\x00" in filters.workflow:
        # PostgreSQL cannot even compare a string holding NUL: refuse it on every database.
        raise InvalidQuery("the workflow filter contains a NUL character: remove it")
    executions = Execution.objects.order_by("-id").defer(*LIST_DEFERRED)
    executions = filter_executions(executions, filters.workflow, filters.status)
    if filters.search:
        low, high = id_range(filters.search)
        executions = executions.filter(id__gte=low, id__lte=high)
    if filters.parent:
        executions = executions.filter(parent_id=parent_id(filters.parent))
    return executions


def parent_id(text: str) -> uuid.UUID:
    try:
        return parse_execution_id(text.strip())
    except ExecutionNotFound:
        raise InvalidQuery(
            f"parent {text.strip()[:40]!r} is not an execution id: use a whole id, as its page "
            "shows it"
        ) from None


def execution_page(
    filters: ListFilters, *, cursor: str | None = None, limit: int = PAGE_SIZE
) -> ListPage:
    """Newest first, keyset-paged on the time-ordered id (no OFFSET, no COUNT): two queries."""
    page = keyset_page(filtered_executions(filters), limit=limit, cursor=cursor)
    progress = step_progress(item.id for item in page.items)
    empty = Progress(done=0, total=0)
    return ListPage(
        rows=[
            ListRow(execution=item, progress=progress.get(item.id, empty)) for item in page.items
        ],
        next_cursor=page.next_cursor,
    )


def step_progress(execution_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Progress]:
    """Steps done/total of the page's executions, in one grouped query on the step index."""
    ids = list(execution_ids)
    if not ids:
        return {}
    rows = (
        Step.objects.filter(execution_id__in=ids)
        .order_by()
        .values("execution_id")
        .annotate(total=Count("id"), done=Count("id", filter=Q(status=StepStatus.COMPLETED)))
    )
    return {row["execution_id"]: Progress(done=row["done"], total=row["total"]) for row in rows}


def counts_by_status(since: datetime) -> dict[str, int]:
    """Executions created since `since`, by status, zeros included: one statement of the kept
    per-minute counts and at most a minute of rows (dashboard.counters), whatever the traffic."""
    statuses = list(ExecutionStatus.values)
    counts = counts_since(since, [{"status": status} for status in statuses])
    return dict(zip(statuses, counts, strict=True))


@dataclass(frozen=True, kw_only=True)
class WorkflowActivity:
    counts: dict[str, int]
    last: Execution | None


def workflow_activity(workflows: Iterable[str], *, since: datetime) -> dict[str, WorkflowActivity]:
    """Counts by status since `since` and the latest execution, per workflow: two queries."""
    names = list(dict.fromkeys(workflows))
    if not names:
        return {}
    pairs = [(name, status) for name in names for status in ExecutionStatus.values]
    totals = counts_since(since, [{"workflow": name, "status": status} for name, status in pairs])
    counts: dict[str, dict[str, int]] = {name: {} for name in names}
    for (name, status), total in zip(pairs, totals, strict=True):
        counts[name][status] = total
    latest = latest_executions(names)
    return {name: WorkflowActivity(counts=counts[name], last=latest.get(name)) for name in names}


def latest_executions(workflows: list[str]) -> dict[str, Execution]:
    """The newest execution of each workflow: one index seek per workflow, in a single query."""
    newest = Q()
    for name in workflows:
        newest |= Q(
            id=Subquery(Execution.objects.filter(workflow=name).order_by("-id").values("id")[:1])
        )
    executions = Execution.objects.filter(newest).defer(*LIST_DEFERRED)
    return {execution.workflow: execution for execution in executions}


@dataclass(frozen=True, kw_only=True)
class StepChildren:
    """How far the children of one invoke / invoke_many step have got."""

    total: int
    running: int
    completed: int
    failed: int
    cancelled: int

    @property
    def done(self) -> int:
        return self.total - self.running


@dataclass(frozen=True, kw_only=True)
class Children:
    by_step: dict[str, StepChildren]
    first: list[Execution]  # the CHILDREN_SHOWN oldest, in the order they were started

    @property
    def total(self) -> int:
        return sum(counts.total for counts in self.by_step.values())


def children_of(execution_id: uuid.UUID, *, limit: int = CHILDREN_SHOWN) -> Children:
    """Counts by parent step and status in one grouped query, and the first `limit` children in
    another: two queries however many children there are."""
    children = Execution.objects.filter(parent_id=execution_id)
    rows = (
        children.order_by()
        .values("parent_step")
        .annotate(
            total=Count("id"),
            **{status: Count("id", filter=Q(status=status)) for status in ExecutionStatus.values},
        )
    )
    by_step = {row.pop("parent_step"): StepChildren(**row) for row in rows}
    first = list(children.order_by("id").defer(*LIST_DEFERRED)[:limit]) if by_step else []
    return Children(by_step=by_step, first=first)


@dataclass(frozen=True, kw_only=True)
class Events:
    latest: list[Event]  # newest first
    more: bool


def events_of(execution_id: uuid.UUID, *, limit: int = EVENTS_SHOWN) -> Events:
    """The newest `limit` events sent to the execution, in one query."""
    events = list(Event.objects.filter(execution_id=execution_id).order_by("-id")[: limit + 1])
    return Events(latest=events[:limit], more=len(events) > limit)
