"""Bounded reads of one execution for its page: a window of its steps, the last attempts of each,
previews of big values and a summary of the steps outside the window. Each is one query whatever
the number of steps, attempts or bytes behind it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from itertools import takewhile
from typing import TypeVar

from django.db.models import (
    Count,
    Exists,
    F,
    Max,
    Min,
    Model,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Sum,
    TextField,
    Value,
)
from django.db.models.functions import Cast, Length, Substr

from engine.errors import ExecutionNotFound
from engine.models import Attempt, Execution, Step, StepStatus
from engine.queries import parse_execution_id

# The page shows this many steps, then a "more" link; and the last ATTEMPTS_SHOWN attempts of
# each step, then "show all".
STEPS_SHOWN = 50
ATTEMPTS_SHOWN = 10
# The live refresh of the steps loaded with "more" reads them again at once, up to this many.
LIVE_STEPS_MAX = 500
# A page whose last step is a `step.parallel` group, or one of its branches, runs on to the
# group's last branch (up to this many more steps), so that no page splits a group.
GROUP_RUN_ON = 200
# A stored value longer than this (in characters of its JSON) reaches the page as its first
# PREVIEW_CHARS only; the whole value is loaded on demand.
PREVIEW_CHARS = 10_000
VALUE_FIELDS = ("input", "output")
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class CutValue:
    """Stands for a stored value too big for the page: its first characters and its size."""

    head: str
    size: int


@dataclass(frozen=True, kw_only=True)
class SpanSummary:
    """The steps on one side of the window."""

    count: int = 0
    failed: int = 0
    running: int = 0  # not ended
    first_started: datetime | None = None
    last_finished: datetime | None = None
    first_position: int | None = None  # 0-based
    last_position: int | None = None


@dataclass(frozen=True, kw_only=True)
class StepSummary:
    """Every step of the execution in a few figures, and those before and after the window.
    `changes` is what a poll of a running execution compares beyond the window's own steps."""

    total: int
    before: SpanSummary
    after: SpanSummary
    last_started: datetime | None = None
    last_finished: datetime | None = None
    last_wake: datetime | None = None  # of a sleep or a retry (not a wait's timeout)
    waiting_event: str = ""  # an event type a step waits for now
    changes: tuple[object, ...] = ()

    def figures(self) -> tuple[object, ...]:
        return (self.total, self.last_started, self.last_finished, self.last_wake, *self.changes)


NO_SPAN = SpanSummary()
FINISHED_STEP_STATUSES = (StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.CANCELLED)
BEFORE, AFTER = 0, 1  # the sides of the window
# The figures of the steps on one side of the window (SpanSummary's, and the last start).
SPAN = {
    "count": Count("id"),
    "failed": Count("id", filter=Q(status=StepStatus.FAILED)),
    "running": Count("id", filter=~Q(status__in=FINISHED_STEP_STATUSES)),  # not ended
    "first_started": Min("started_at"),
    "last_started": Max("started_at"),
    "last_finished": Max("finished_at"),
    "first_position": Min("position"),
    "last_position": Max("position"),
}
# And while the execution runs: its next wake, an event it waits for, and what a poll
# compares (the window's own steps are in the page's fingerprint): any step starting,
# ending, failing, retrying or beginning to wait.
LIVE = {
    "last_wake": Max("wake_at", filter=~Q(status=StepStatus.WAITING)),  # a sleep's, a retry's
    "waiting_event": Max("event_type", filter=Q(status=StepStatus.WAITING)),
    "waiting": Count("id", filter=Q(status__in=(StepStatus.WAITING, StepStatus.SLEEPING))),
    "attempts": Sum("attempt_count"),
    "failures": Sum("failure_count"),
}
CHANGES = ("count", "failed", "running", "waiting", "attempts", "failures")


def previews(field: str) -> dict[str, object]:
    text = Cast(field, TextField())
    return {f"{field}_size": Length(text), f"{field}_head": Substr(text, 1, PREVIEW_CHARS)}


def with_previews(queryset: QuerySet, *, full: bool) -> QuerySet:
    """The JSON values stay in the database but for their first characters, unless `full`."""
    if full:
        return queryset
    annotations: dict[str, object] = {}
    for field in VALUE_FIELDS:
        annotations.update(previews(field))
    return queryset.defer(*VALUE_FIELDS).annotate(**annotations)


def fill_previews(row: Model, *, full: bool) -> None:
    """Set each deferred value: the value itself when it fits, else a CutValue."""
    if full:
        return
    for field in VALUE_FIELDS:
        size, head = getattr(row, f"{field}_size"), getattr(row, f"{field}_head")
        if size is None:
            value: object = None
        elif size <= PREVIEW_CHARS:
            value = json.loads(head)
        else:
            value = CutValue(head=head, size=size)
        setattr(row, field, value)


def execution_head(execution_id: object, *, full: bool = False) -> Execution:
    """The execution row, with previews of its input and output, and `has_children` (a probe
    of the parent index, so that a page without children spends nothing on them): one query."""
    children = Execution.objects.filter(parent_id=OuterRef("pk"))
    executions = with_previews(Execution.objects.annotate(has_children=Exists(children)), full=full)
    execution = executions.filter(id=parse_execution_id(execution_id)).first()
    if execution is None:
        raise ExecutionNotFound(execution_id)
    fill_previews(execution, full=full)
    return execution


def last_attempts() -> Prefetch:
    """The last ATTEMPTS_SHOWN attempts of each step, a range of the (step, number) index."""
    attempts = Attempt.objects.filter(number__gt=F("step__attempt_count") - ATTEMPTS_SHOWN)
    return Prefetch("attempts", queryset=attempts.order_by("number"))


def window_size(after: int | None, through: int | None) -> int:
    """STEPS_SHOWN, or the steps after `after` through position `through` (what a page
    loaded with "more" holds, read again by its live refresh), at most LIVE_STEPS_MAX."""
    if after is None or through is None or through <= after:
        return STEPS_SHOWN
    return min(through - after, LIVE_STEPS_MAX)


def step_window(
    execution_id: uuid.UUID, *, after: int | None, full: bool = False, limit: int = STEPS_SHOWN
) -> tuple[list[Step], bool]:
    """Up to `limit` steps after position `after` (from the first if None), in order, with
    their last attempts: two queries (two more where a parallel group would be split). The
    flag says whether more steps follow."""
    steps = Step.objects.filter(execution_id=execution_id).order_by("position")
    rows = _steps_after(steps, after, limit + 1, full=full)
    window, more = rows[:limit], len(rows) > limit
    # The last step is a group, or a branch of one, whose next branch is on the next page
    # (branches are named after their group, and names are unique in an execution).
    group = (window[-1].branch_of or window[-1].name) if window else ""
    if more and rows[limit].branch_of == group:
        rest = _steps_after(steps, window[-1].position, GROUP_RUN_ON + 1, full=full)
        branches = list(takewhile(lambda step: step.branch_of == group, rest[:GROUP_RUN_ON]))
        window += branches
        more = len(rest) > len(branches)
    return window, more


def _steps_after(steps: QuerySet[Step], after: int | None, count: int, *, full: bool) -> list[Step]:
    if after is not None:
        steps = steps.filter(position__gt=after)
    rows = list(with_previews(steps, full=full).prefetch_related(last_attempts())[:count])
    for step in rows:
        fill_previews(step, full=full)
    return rows


def step_summary(
    execution_id: uuid.UUID, window: list[Step], *, live: bool, after: int | None
) -> StepSummary:
    """Counts and times of the steps outside `window` and of all of them, in one query: each
    side of the window is a range of the (execution, position) index, aggregated once and
    without reading the steps' values; the window's own steps are counted here. `live`: what
    a poll compares too; `after`: the window starts past the first step, so some are before."""
    last = window[-1].position if window else after if after is not None else -1
    sides = {AFTER: Q(position__gt=last)}
    if after is not None:
        sides[BEFORE] = Q(position__lt=window[0].position if window else after + 1)
    steps = Step.objects.filter(execution_id=execution_id).order_by()
    parts = [span_figures(steps.filter(where), side, live=live) for side, where in sides.items()]
    spans = {row["side"]: row for row in parts[0].union(*parts[1:], all=True)}
    rows = [*(spans[side] for side in sides if side in spans), window_figures(window)]
    return StepSummary(
        total=sum(row["count"] for row in rows),
        before=span_summary(spans.get(BEFORE)),
        after=span_summary(spans.get(AFTER)),
        last_started=latest(row["last_started"] for row in rows),
        last_finished=latest(row["last_finished"] for row in rows),
        last_wake=latest(row["last_wake"] for row in rows) if live else None,
        waiting_event=(latest(row["waiting_event"] for row in rows) or "") if live else "",
        changes=tuple(spans[side][name] for side in sides if side in spans for name in CHANGES)
        if live
        else (),
    )


def span_figures(steps: QuerySet[Step], side: int, *, live: bool) -> QuerySet[Step, dict]:
    """One row of SPAN (and LIVE) figures of `steps`, tagged with `side`."""
    aggregates = {**SPAN, **(LIVE if live else {})}
    return steps.annotate(side=Value(side)).values("side").annotate(**aggregates)


def window_figures(window: list[Step]) -> dict[str, object]:
    """What the summary takes from span_figures, of the window's steps (already loaded)."""
    waiting = [step for step in window if step.status == StepStatus.WAITING]
    return {
        "count": len(window),
        "last_started": latest(step.started_at for step in window),
        "last_finished": latest(step.finished_at for step in window),
        "last_wake": latest(step.wake_at for step in window if step.status != StepStatus.WAITING),
        "waiting_event": latest(step.event_type for step in waiting),
    }


def latest(values: Iterable[T | None]) -> T | None:
    """The greatest of `values` that is not None, or None."""
    return max((value for value in values if value is not None), default=None)  # type: ignore[type-var]


def span_summary(row: dict[str, object] | None) -> SpanSummary:
    if row is None:
        return NO_SPAN
    return SpanSummary(**{name: row[name] for name in SpanSummary.__dataclass_fields__})  # type: ignore[arg-type]


def step_at(execution_id: object, position: int) -> Step:
    """One step by its position (0-based), with every attempt: two queries."""
    step = (
        Step.objects.filter(execution_id=parse_execution_id(execution_id), position=position)
        .defer(*VALUE_FIELDS)
        .prefetch_related(Prefetch("attempts", queryset=Attempt.objects.order_by("number")))
        .first()
    )
    if step is None:
        raise ExecutionNotFound(execution_id)
    return step


def stored_value(execution_id: object, field: str, position: int | None) -> object:
    """The whole input or output of the execution, or of its step at `position`: one query."""
    if field not in VALUE_FIELDS:
        raise ExecutionNotFound(execution_id)
    identity = parse_execution_id(execution_id)
    if position is None:
        rows = Execution.objects.filter(id=identity)
    else:
        rows = Step.objects.filter(execution_id=identity, position=position)
    found = rows.values_list(field).first()
    if found is None:
        raise ExecutionNotFound(execution_id)
    return found[0]
