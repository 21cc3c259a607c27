"""An execution as its page shows it: values pretty-printed, steps numbered, timeline computed."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from dashboard import execution_reads as reads
from dashboard import queries
from dashboard.queries import Children, Events, StepChildren
from dashboard.timeline import Timeline, branch_order, build_timeline
from dashboard.values import JsonValue, pretty, preview
from engine.models import Attempt, Event, Execution, Step, StepStatus
from engine.reruns import can_start_from

# While an execution runs, its page is re-rendered at least this often (the "now" of its
# timeline moves), and sooner whenever a step or attempt changes.
REFRESH_SECONDS = 5
NO_CHILDREN = Children(by_step={}, first=[])
NO_EVENTS = Events(latest=[], more=False)
NO_TIMELINE = Timeline(rows=[], ticks=[], now_left=None, span="")


@dataclass(frozen=True, kw_only=True)
class Wait:
    """What a step waits (or waited) for: an event, one child, or the children of a fan-out."""

    kind: str  # event, child, children
    event_type: str = ""
    child_id: uuid.UUID | None = None
    child: Execution | None = None  # when it is among the children the page loaded
    children: StepChildren | None = None


@dataclass(frozen=True, kw_only=True)
class StepView:
    step: Step
    position: int
    anchor: str
    input: JsonValue
    output: JsonValue
    attempts: list[Attempt]
    sleep_ms: object
    # None while the step still runs or sleeps: its duration then ticks in the browser.
    ended_at: datetime | None
    wait: Wait | None
    # A `step.parallel` group lists its branch steps here; they are not top-level steps.
    branches: list[StepView] = field(default_factory=list)

    @property
    def value_params(self) -> str:
        """Names this step to the view that loads a whole value."""
        return f"&step={self.position}"

    @property
    def hidden_attempts(self) -> int:
        """Earlier attempts not loaded: "show all" fetches them."""
        return max(self.step.attempt_count - len(self.attempts), 0)

    @property
    def is_group(self) -> bool:
        return bool(self.branches)

    @property
    def can_rerun_from(self) -> bool:
        """Whether the card offers "Rerun from here"."""
        return can_start_from(self.step)

    @property
    def reused_before(self) -> str:
        """What a rerun from this step reuses, for its confirmation."""
        before = self.position - 1
        if not before:
            return "Nothing is reused: it is the first step."
        if before == 1:
            return "The 1 step before it is reused as stored: its function does not run again."
        return (
            f"The {before} steps before it are reused as stored: their functions do not run again."
        )

    @property
    def kind(self) -> str:
        """sleep, wait, group or run: what the step's card shows."""
        if self.step.is_sleep:
            return "sleep"
        if self.wait is not None:
            return "wait"
        return "group" if self.is_group else "run"


@dataclass(frozen=True, kw_only=True)
class ChildRow:
    execution: Execution
    step_anchor: str | None  # the parent step's card on this page


@dataclass(frozen=True, kw_only=True)
class EventRow:
    event: Event
    payload: JsonValue
    consumed_by: StepView | None


@dataclass(frozen=True, kw_only=True)
class ExecutionPage:
    execution: Execution
    input: JsonValue
    output: JsonValue
    steps: list[StepView]  # a window of the steps, in the order reached
    top_steps: list[StepView]  # the same, with parallel branches under their group
    summary: reads.StepSummary | None
    next_after: int | None  # the window's last position when more steps follow
    after: int | None  # the window starts after this position (None: from the first step)
    timeline: Timeline
    children: Children
    child_rows: list[ChildRow]
    events: list[EventRow]
    more_events: bool
    fingerprint: str
    full: bool

    @property
    def fan_outs(self) -> list[StepView]:
        """The invoke_many steps, each with its children's progress."""
        return [view for view in self.steps if view.wait and view.wait.kind == "children"]

    @property
    def waiting_for(self) -> list[str]:
        """The event types that steps wait for now: the send form's suggestions (those of the
        window, and one from the summary, where the waiting step is often past the window)."""
        types = [
            view.step.event_type
            for view in self.steps
            if view.step.status == StepStatus.WAITING and view.step.event_type
        ]
        if self.summary and self.summary.waiting_event:
            types.append(self.summary.waiting_event)
        return list(dict.fromkeys(types))

    @property
    def window(self) -> tuple[int, int]:
        """The numbers of the first and the last step shown (from 1)."""
        if not self.steps:
            return (0, 0)
        return (self.steps[0].position, self.steps[-1].position)

    @property
    def step_total(self) -> int:
        return self.summary.total if self.summary else len(self.steps)

    @property
    def hidden_attempts(self) -> bool:
        return any(view.hidden_attempts for view in self.steps)


def load(
    execution_id: object,
    *,
    now: datetime,
    full: bool = False,
    after: int | None = None,
    steps_only: bool = False,
    limit: int = reads.STEPS_SHOWN,
) -> ExecutionPage:
    """The page of an execution: its row, a window of `limit` steps after position `after`
    with their last attempts, a summary of every step, its events, in five queries however many
    steps, attempts and bytes it holds; two more for its children if it has any.
    `steps_only`: for the answer to "more", which shows the window's steps and nothing else (no
    events, timeline or fingerprint)."""
    execution = reads.execution_head(execution_id, full=full)
    steps, more = reads.step_window(execution.id, after=after, full=full, limit=limit)
    summary = reads.step_summary(execution.id, steps, live=not execution.is_finished, after=after)
    children = queries.children_of(execution.id) if execution.has_children else NO_CHILDREN
    return present(
        execution,
        steps,
        summary,
        now=now,
        full=full,
        more=more,
        after=after,
        children=children,
        events=NO_EVENTS if steps_only else queries.events_of(execution.id),
        steps_only=steps_only,
    )


def present(
    execution: Execution,
    steps: list[Step],
    summary: reads.StepSummary | None = None,
    *,
    now: datetime,
    full: bool = False,
    more: bool = False,
    after: int | None = None,
    children: Children = NO_CHILDREN,
    events: Events = NO_EVENTS,
    steps_only: bool = False,
) -> ExecutionPage:
    """`steps`: a window of the execution's steps, their attempts prefetched."""
    views = [_step_view(step, execution, full, children) for step in steps]
    by_name = {view.step.name: view for view in views}
    views_by_id = {view.step.id: view for view in views}
    extra = [*_changes(children, events), *(summary.figures() if summary else ())]
    return ExecutionPage(
        execution=execution,
        input=shown(execution.input, full),
        output=shown(execution.output, full),
        steps=views,
        top_steps=_group_branches(views),
        summary=summary,
        next_after=steps[-1].position if more and steps else None,
        after=after,
        timeline=NO_TIMELINE
        if steps_only
        else build_timeline(execution, steps, now, children=children.by_step, summary=summary),
        children=children,
        child_rows=[
            ChildRow(execution=child, step_anchor=_anchor(by_name.get(child.parent_step)))
            for child in children.first
        ],
        events=[_event_row(event, views_by_id, full) for event in events.latest],
        more_events=events.more,
        fingerprint="" if steps_only else fingerprint(execution, steps, now, extra=extra),
        full=full,
    )


def shown(value: object, full: bool) -> JsonValue:
    if isinstance(value, reads.CutValue):
        return preview(value.head, value.size)
    return pretty(value, full=full)


def _step_view(step: Step, execution: Execution, full: bool, children: Children) -> StepView:
    sleep_ms = step.input.get("ms") if step.is_sleep and isinstance(step.input, dict) else None
    return StepView(
        step=step,
        position=step.position + 1,
        anchor=f"step-{step.position + 1}",
        input=shown(step.input, full),
        output=shown(step.output, full),
        attempts=list(step.attempts.all()),
        sleep_ms=sleep_ms,
        ended_at=step.finished_at or execution.finished_at,
        wait=_wait(step, children),
    )


def _wait(step: Step, children: Children) -> Wait | None:
    if step.event_type:
        return Wait(kind="event", event_type=step.event_type)
    if step.child_id:
        child = next((each for each in children.first if each.id == step.child_id), None)
        return Wait(kind="child", child_id=step.child_id, child=child)
    if step.name in children.by_step:
        return Wait(kind="children", children=children.by_step[step.name])
    return None


def _group_branches(views: list[StepView]) -> list[StepView]:
    """Branches under their group, in the order the group named them; a branch whose group is
    missing stays where it is."""
    groups = {view.step.name: view for view in views if not view.step.branch_of}
    top: list[StepView] = []
    for view in views:
        group = groups.get(view.step.branch_of) if view.step.branch_of else None
        if group is None:
            top.append(view)
        else:
            group.branches.append(view)
    for group in groups.values():
        order = branch_order(group.step)
        group.branches.sort(key=lambda branch: order.get(branch.step.name, len(order)))
    return top


def _anchor(view: StepView | None) -> str | None:
    return view.anchor if view else None


def _event_row(event: Event, views: dict[int, StepView], full: bool) -> EventRow:
    consumer = views.get(event.consumed_by_id) if event.consumed_by_id else None
    return EventRow(event=event, payload=pretty(event.payload, full=full), consumed_by=consumer)


def _changes(children: Children, events: Events) -> list[object]:
    """What a poll must notice beyond the steps: children ending, events sent or consumed."""
    parts: list[object] = sorted(
        (name, counts.running, counts.completed, counts.failed, counts.cancelled)
        for name, counts in children.by_step.items()
    )
    parts += [(event.id, event.consumed_by_id) for event in events.latest]
    return parts


def _logs_mark(logs: object) -> object:
    """What changes as a running attempt's lines arrive (a long log keeps its count once its
    middle is cut, so the last line's time too)."""
    if not isinstance(logs, list) or not logs:
        return 0
    last = logs[-1]
    return len(logs), last.get("at") if isinstance(last, dict) else None


def fingerprint(
    execution: Execution, steps: list[Step], now: datetime, *, extra: Sequence[object] = ()
) -> str:
    """Changes when anything shown changes, so a poll that finds nothing new answers 204."""
    parts: list[object] = [
        execution.status,
        execution.started_at,
        execution.finished_at,
        execution.error is not None,
        execution.owner,
    ]
    if not execution.is_finished:
        parts.append(int(now.timestamp()) // REFRESH_SECONDS)
    for step in steps:
        parts += [step.name, step.status, step.attempt_count, step.failure_count]
        parts += [step.finished_at, step.wake_at]
        parts += [
            (attempt.status, attempt.finished_at, attempt.worker, _logs_mark(attempt.logs))
            for attempt in step.attempts.all()
        ]
    parts += list(extra)
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]
