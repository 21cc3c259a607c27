"""The waterfall of an execution: every attempt, sleep, wait and retry on one time axis.

Offsets are computed here as percentages of [trigger time, end or now], so the page draws the
timeline with plain CSS and no script. The branches of a `step.parallel` are lanes under their
group's row, so work that ran at once reads side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from dashboard.values import format_duration
from engine.models import Attempt, AttemptStatus, Execution, Step, StepStatus
from engine.parallel import branch_name

if TYPE_CHECKING:
    from dashboard.execution_reads import SpanSummary, StepSummary
    from dashboard.queries import StepChildren

TICK_STEPS_MS = (
    *(base * 10**power for power in range(0, 5) for base in (1, 2, 5)),
    15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000,
    7_200_000, 21_600_000, 43_200_000, 86_400_000,
)  # fmt: skip
MAX_TICKS = 6
GRID_LINE = '<span class="tl-grid" style="left: {}%" aria-hidden="true"></span>'


@dataclass(frozen=True, kw_only=True)
class Bar:
    kind: str  # queued, running, completed, failed, cancelled, backoff, sleep, wait, group
    left: str
    width: str
    label: str
    planned: bool = False
    # The hover box opens leftwards for bars in the right half, so it stays on screen.
    align_end: bool = False
    # An attempt's bar links to its row in the step's attempts table.
    attempt: int | None = None


@dataclass(frozen=True, kw_only=True)
class Row:
    name: str
    anchor: str
    status: str
    started_at: datetime | None
    # None while the row is still going: its duration then ticks in the browser.
    ended_at: datetime | None
    bars: list[Bar]
    # The branch rows of a parallel group, drawn as lanes under it.
    lanes: list[Row] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class Tick:
    left: str
    label: str


@dataclass(frozen=True, kw_only=True)
class Timeline:
    rows: list[Row]
    ticks: list[Tick]
    now_left: str | None
    span: str

    @cached_property
    def grid(self) -> SafeString:
        """The tick lines every row repeats, written once for all of them."""
        return format_html_join("", GRID_LINE, ((tick.left,) for tick in self.ticks))


class Axis:
    """Maps times onto [0, 100] percent of the execution's span."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.span = max(end - start, timedelta(milliseconds=1))

    def bar(self, kind: str, begin: datetime, end: datetime, label: str, **extra: object) -> Bar:
        left = self.percent(begin)
        width = max(self.percent(end) - left, 0.0)
        return Bar(
            kind=kind,
            left=f"{left:.3f}",
            width=f"{width:.3f}",
            label=label,
            align_end=left > 55,
            **extra,
        )

    def percent(self, moment: datetime) -> float:
        return min(max((moment - self.start) / self.span * 100, 0.0), 100.0)

    def offset(self, moment: datetime) -> str:
        return "+" + format_duration(moment - self.start)


def build_timeline(
    execution: Execution,
    steps: list[Step],
    now: datetime,
    *,
    children: Mapping[str, StepChildren] | None = None,
    summary: StepSummary | None = None,
) -> Timeline:
    """`steps` (all of them, or a window of them) come with their attempts prefetched;
    `children` counts the children of each invoke step by name, for the labels; `summary`
    stands for the steps outside the window, each side a row of its own."""
    axis = Axis(execution.created_at, _axis_end(execution, steps, now, summary))
    end = execution.finished_at or now
    groups = {step.branch_of for step in steps if step.branch_of}
    step_rows = [
        (step, _step_row(step, axis, execution.finished_at, now, children or {}, groups))
        for step in steps
    ]
    running = not execution.is_finished
    before = _span_row("earlier", summary.before, axis, end) if summary else []
    after = _span_row("more", summary.after, axis, end) if summary else []
    return Timeline(
        rows=[_execution_row(execution, axis, end), *before, *_lanes(step_rows), *after],
        ticks=_ticks(axis),
        now_left=f"{axis.percent(now):.3f}" if running else None,
        span=format_duration(axis.span),
    )


def _lanes(step_rows: list[tuple[Step, Row]]) -> list[Row]:
    """Branch rows move under their group's row, in the order the group named them."""
    groups = {step.name: (step, row) for step, row in step_rows if not step.branch_of}
    top: list[Row] = []
    for step, row in step_rows:
        if step.branch_of in groups:
            groups[step.branch_of][1].lanes.append(row)
        else:
            top.append(row)
    for group, row in groups.values():
        order = branch_order(group)
        row.lanes.sort(key=lambda lane: order.get(lane.name, len(order)))
    return top


def branch_order(group: Step) -> dict[str, int]:
    """The place of each branch step in the group, in the order the handler named the keys."""
    keys = group.input.get("branches") if isinstance(group.input, dict) else None
    if not isinstance(keys, list):
        return {}
    return {branch_name(group.name, str(key)): index for index, key in enumerate(keys)}


def _span_row(which: str, span: SpanSummary, axis: Axis, end: datetime) -> list[Row]:
    """The steps before or after the window in one row: a bar from the first start to the
    last end, labelled with their count."""
    if not span.count:
        return []
    status = "failed" if span.failed else "running" if span.running else "completed"
    first = (span.first_position or 0) + 1
    last = (span.last_position or 0) + 1
    name = f"{span.count:,} {which} step{'s' if span.count != 1 else ''}"
    bars = []
    if span.first_started:
        until = span.last_finished if not span.running and span.last_finished else end
        label = (
            f"steps {first:,} to {last:,} · {span.count:,} steps, {span.failed:,} failed, "
            f"{span.running:,} not ended · {clock(span.first_started)} → {clock(until)}"
        )
        bars.append(axis.bar("span", span.first_started, until, label))
    return [
        Row(
            name=name,
            anchor="steps-more" if which == "more" else "steps-title",
            status=status,
            started_at=span.first_started,
            ended_at=span.last_finished if not span.running else None,
            bars=bars,
        )
    ]


def _axis_end(
    execution: Execution, steps: list[Step], now: datetime, summary: StepSummary | None = None
) -> datetime:
    """The end, or now while running; planned wake times still to come stretch the axis (not
    a wait's timeout, often days away: the step's card says when it is)."""
    moments = [execution.finished_at or now]
    if summary is not None:
        moments += [moment for moment in (summary.last_started, summary.last_finished) if moment]
        if not execution.is_finished and summary.last_wake:
            moments.append(summary.last_wake)
    for step in steps:
        planned = step.wake_at and step.status != StepStatus.WAITING
        if not execution.is_finished and planned:
            moments.append(step.wake_at)
        moments += [moment for moment in (step.started_at, step.finished_at) if moment]
        for attempt in step.attempts.all():
            moments += [moment for moment in (attempt.started_at, attempt.finished_at) if moment]
    return max(moments)


def _execution_row(execution: Execution, axis: Axis, end: datetime) -> Row:
    started = execution.started_at
    queued_until = min(started or end, end)
    bars = [
        axis.bar(
            "queued",
            execution.created_at,
            queued_until,
            f"queued {format_duration(queued_until - execution.created_at)} "
            "before a worker picked it up",
        )
    ]
    if started:
        bars.append(
            axis.bar(
                execution.status,
                started,
                end,
                f"execution {execution.status} · ran {format_duration(end - started)} "
                f"· {clock(started)} → {clock(end)}",
            )
        )
    return Row(
        name="execution",
        anchor="summary",
        status=execution.status,
        started_at=execution.created_at,
        ended_at=execution.finished_at,
        bars=bars,
    )


def _step_row(
    step: Step,
    axis: Axis,
    execution_end: datetime | None,
    now: datetime,
    children: Mapping[str, StepChildren],
    groups: set[str],
) -> Row:
    end = execution_end or now
    if step.is_sleep:
        bars = _sleep_bars(step, axis)
    elif step.attempt_count == 0 and (step.event_type or step.child_id or step.name in children):
        bars = _wait_bars(step, axis, end, children.get(step.name))
    elif step.name in groups and not step.branch_of:
        bars = _group_bars(step, axis, end)
    else:
        bars = _attempt_bars(step, axis, end, now)
    return Row(
        name=step.name,
        anchor=f"step-{step.position + 1}",
        status=step.status,
        started_at=step.started_at,
        ended_at=step.finished_at or execution_end,
        bars=bars,
    )


def _sleep_bars(step: Step, axis: Axis) -> list[Bar]:
    if not step.started_at:
        return []
    until = step.finished_at or step.wake_at or step.started_at
    ms = (step.input or {}).get("ms") if isinstance(step.input, dict) else None
    planned = step.status == StepStatus.SLEEPING
    verb = "wakes" if planned else "woke" if step.status == StepStatus.COMPLETED else "stopped"
    label = f"{step.name} · sleep {ms} ms · {clock(step.started_at)} → {verb} {clock(until)}"
    return [axis.bar("sleep", step.started_at, until, label, planned=planned)]


def _wait_bars(step: Step, axis: Axis, end: datetime, children: StepChildren | None) -> list[Bar]:
    if not step.started_at:
        return []
    until = step.finished_at or end
    if step.event_type:
        what = f"event {step.event_type!r}"
    elif step.child_id:
        what = f"child {step.child_id}"
    else:
        what = f"{children.done}/{children.total} children done" if children else "children"
    waiting = step.status == StepStatus.WAITING
    label = (
        f"{step.name} · {'waiting' if waiting else 'waited'} for {what} · "
        f"{clock(step.started_at)} → {'now' if waiting else clock(until)}"
    )
    if waiting and step.wake_at:
        label += f" · times out at {clock(step.wake_at)}"
    elif not waiting:
        label += f" · {step.status}"
    return [axis.bar("wait", step.started_at, until, label)]


def _group_bars(step: Step, axis: Axis, end: datetime) -> list[Bar]:
    """The span of a parallel step: from its start to its last branch's end."""
    if not step.started_at:
        return []
    until = step.finished_at or end
    label = (
        f"{step.name} · parallel, {len(branch_order(step))} branches · {step.status} · "
        f"{format_duration(until - step.started_at)} · {clock(step.started_at)} → {clock(until)}"
    )
    return [axis.bar("group", step.started_at, until, label)]


def _attempt_bars(step: Step, axis: Axis, end: datetime, now: datetime) -> list[Bar]:
    bars: list[Bar] = []
    allowed = step.retries + 1
    previous: Attempt | None = None
    attempts = list(step.attempts.all())
    earlier = step.attempt_count - len(attempts)
    if earlier > 0 and attempts and step.started_at:
        label = (
            f"{step.name} · {earlier} earlier attempt{'s' if earlier != 1 else ''} · "
            f"{clock(step.started_at)} → {clock(attempts[0].started_at)} · show them on the step"
        )
        bars.append(axis.bar("span", step.started_at, attempts[0].started_at, label))
    for attempt in attempts:
        if previous is not None and previous.finished_at:
            bars.append(_backoff_bar(step, axis, previous.finished_at, attempt.started_at))
        bars.append(_attempt_bar(step, attempt, allowed, axis, end))
        previous = attempt
    waiting = step.status == StepStatus.RUNNING and step.wake_at
    if waiting and previous is not None and previous.finished_at:
        bars.append(
            _backoff_bar(step, axis, previous.finished_at, step.wake_at, planned=step.wake_at > now)
        )
    return bars


def _attempt_bar(step: Step, attempt: Attempt, allowed: int, axis: Axis, end: datetime) -> Bar:
    finished = attempt.finished_at or end
    parts = [f"{step.name} · attempt {attempt.number} of {allowed}", attempt.status]
    if attempt.status == AttemptStatus.FAILED:
        parts.append(f"{attempt.error_type}: {attempt.error_message}")
    parts.append(format_duration(finished - attempt.started_at))
    parts.append(f"{clock(attempt.started_at)} → {clock(finished)}")
    if attempt.worker:
        parts.append(f"on {attempt.worker}")
    label = " · ".join(parts)
    return axis.bar(attempt.status, attempt.started_at, finished, label, attempt=attempt.number)


def _backoff_bar(
    step: Step, axis: Axis, begin: datetime, until: datetime, *, planned: bool = False
) -> Bar:
    label = (
        f"{step.name} · retry back-off {format_duration(until - begin)} · "
        f"{clock(begin)} → {'next attempt due' if planned else 'next attempt'} {clock(until)}"
    )
    return axis.bar("backoff", begin, until, label, planned=planned)


def _ticks(axis: Axis) -> list[Tick]:
    span_ms = axis.span.total_seconds() * 1000
    # Past the table (an execution running for weeks): whole days, still at most MAX_TICKS.
    day_ms = TICK_STEPS_MS[-1]
    step_ms = next(
        (step for step in TICK_STEPS_MS if span_ms / step <= MAX_TICKS),
        math.ceil(span_ms / MAX_TICKS / day_ms) * day_ms,
    )
    ticks = []
    moment = 0
    while moment <= span_ms:
        ticks.append(Tick(left=f"{moment / span_ms * 100:.3f}", label=tick_label(moment)))
        moment += step_ms
    return ticks


def tick_label(ms: float) -> str:
    if ms == 0:
        return "0"
    if ms < 1000:
        return f"{ms:g} ms"
    if ms < 60_000:
        return f"{ms / 1000:g} s"
    if ms < 3_600_000:
        return f"{ms / 60_000:g} m"
    if ms < 172_800_000:
        return f"{ms / 3_600_000:g} h"
    return f"{ms / 86_400_000:g} d"


def clock(moment: datetime) -> str:
    """UTC wall-clock time with milliseconds, for hover text."""
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
