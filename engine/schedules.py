"""Schedules: the `cron:` entries of ploy.yaml as `Schedule` rows, ticked by the leading worker.

A tick fires in one transaction that moves the row's `next_run_at` on with a conditional UPDATE
(only if it still holds the value this process read) and triggers the execution with the
idempotency key `schedule:<name>:<tick>`: two leaders ticking at once, on any number of hosts,
start one execution. Ticks missed while nothing ran are not replayed, except the latest.

In a rolling deploy, workers of two versions run at once, their ploy.yaml files differing. Only
`migrate` and the leader bring the rows in line with their ploy.yaml, and a row is deleted only
by a ploy.yaml loaded no earlier than the one that added it (a row's `created_at` is when the
ploy.yaml that added it was loaded). The leader is the oldest worker, so an old version leads
until the old workers are gone, and it cannot delete what the new version added; the first new
leader then deletes what the new version dropped. The leader fires only the schedules its own
ploy.yaml defines.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from croniter import croniter
from django.db import IntegrityError, transaction

from engine import clock, registry, runtime
from engine.config import PloyConfig
from engine.errors import PloyError, ScheduleNotFound
from engine.models import Schedule
from engine.schedule_config import SCHEDULED_WORKFLOW, ScheduleConfig, scheduled_binding
from engine.scheduled import event_input
from engine.writes import serialized

logger = logging.getLogger(__name__)

MICROSECOND = timedelta(microseconds=1)
TIMING_FIELDS = ("cron", "every_seconds")


# -- tick times ---------------------------------------------------------------------------------


def tick_after(cron: str, every_seconds: float | None, moment: datetime) -> datetime:
    """The first tick strictly after `moment`; an `every` schedule ticks an interval on."""
    if every_seconds is not None:
        return moment + timedelta(seconds=every_seconds)
    return _cron_time(croniter(cron, moment.astimezone(UTC)).get_next(datetime))


def _cron_time(value: object) -> datetime:
    assert isinstance(value, datetime)  # croniter returns the type it is asked for
    return value


def latest_tick(row: Schedule, now: datetime) -> datetime:
    """The latest tick at or before `now`, counting from the row's due tick (itself <= now)."""
    start = row.next_run_at
    if row.every_seconds is not None:
        interval = timedelta(seconds=row.every_seconds) // MICROSECOND
        missed = ((now - start) // MICROSECOND) // interval
        return start + missed * interval * MICROSECOND
    before = _cron_time(croniter(row.cron, now.astimezone(UTC)).get_prev(datetime))
    at_now = _cron_time(croniter(row.cron, before).get_next(datetime))
    return max(start, at_now if at_now <= now else before)


def tick_key(name: str, tick: datetime) -> str:
    moment = tick.astimezone(UTC)
    return f"schedule:{name}:{moment.strftime('%Y-%m-%dT%H:%M:%S.')}{moment.microsecond:06d}Z"


# -- sync with ploy.yaml ------------------------------------------------------------------------


def fields_of(schedule: ScheduleConfig) -> dict[str, object]:
    return {
        "schedule": schedule.expression,
        "cron": schedule.cron or "",
        "every_seconds": schedule.every,
        "workflow": SCHEDULED_WORKFLOW if schedule.calls_scheduled else schedule.workflow,
        "calls_scheduled": schedule.calls_scheduled,
        "input": schedule.input,
    }


def sync(
    config: PloyConfig, *, now: datetime | None = None, loaded_at: datetime | None = None
) -> None:
    """Make the rows say what ploy.yaml (loaded at `loaded_at`, by default `now`) says: new
    schedules added, a changed expression due at its next tick from now (pause state and history
    kept), removed ones deleted unless a newer ploy.yaml added them."""
    now = now or clock.now()
    loaded_at = loaded_at or now
    wanted = {schedule.name: schedule for schedule in config.schedules}
    with serialized():
        others = Schedule.objects.exclude(name__in=list(wanted))
        removed = others.filter(created_at__lte=loaded_at).delete()[0]
        if removed:
            logger.info("schedules: %d removed from ploy.yaml deleted", removed)
        if kept := others.count():
            logger.info("schedules: %d added by a newer ploy.yaml kept", kept)
        rows = {row.name: row for row in Schedule.objects.filter(name__in=list(wanted))}
        for name, schedule in wanted.items():
            _sync_one(rows.get(name), schedule, now, loaded_at)


def _sync_one(
    row: Schedule | None, schedule: ScheduleConfig, now: datetime, loaded_at: datetime
) -> None:
    fields = fields_of(schedule)
    first = tick_after(schedule.cron or "", schedule.every, now)
    if row is None:
        try:
            with transaction.atomic():
                Schedule.objects.create(
                    name=schedule.name, next_run_at=first, created_at=loaded_at, **fields
                )
        except IntegrityError:
            pass  # another process synced it first
        return
    if all(getattr(row, key) == value for key, value in fields.items()):
        return
    if any(getattr(row, key) != fields[key] for key in TIMING_FIELDS):
        fields["next_run_at"] = first
    Schedule.objects.filter(name=row.name).update(**fields)


def sync_after_migrate(**kwargs: object) -> None:
    """`manage.py migrate` brings the rows in line with ploy.yaml, before new workers start."""
    config = registry.current().config
    sync(config, loaded_at=loaded_at(config))


_loaded: tuple[PloyConfig, datetime] | None = None


def loaded_at(config: PloyConfig) -> datetime:
    """When this process loaded `config`, as the database's clock reads: a worker notes it as it
    starts (`WorkerProcess.start`), so that it is its age, not when the worker first leads."""
    global _loaded
    if _loaded is None or _loaded[0] is not config:
        _loaded = (config, clock.now())
    return _loaded[1]


_synced: PloyConfig | None = None


def sync_once(config: PloyConfig) -> None:
    """Sync when this process's ploy.yaml is new to it (the leader's first tick)."""
    global _synced
    if _synced is not config:
        sync(config, loaded_at=loaded_at(config))
        _synced = config


# -- ticking ------------------------------------------------------------------------------------


def tick(*, now: datetime | None = None) -> list[str]:
    """Fire each due schedule once; the ids of the executions started. The leader calls it
    every heartbeat, so a tick starts within about a second of its time."""
    config = registry.current().config
    sync_once(config)
    if not config.schedules:
        return []
    now = now or clock.now()
    # Not a row another version's ploy.yaml added (a rolling deploy): its leader fires it.
    names = [schedule.name for schedule in config.schedules]
    due = list(Schedule.objects.filter(paused=False, next_run_at__lte=now, name__in=names))
    started = [fire(row, now) for row in due]
    return [execution_id for execution_id in started if execution_id]


def fire(row: Schedule, now: datetime) -> str | None:
    """Start the execution of the latest tick of `row` due by `now`, unless another process
    fired it first (the row's `next_run_at` has moved on): then nothing."""
    tick_at = latest_tick(row, now)
    following = tick_after(row.cron, row.every_seconds, tick_at)
    with serialized(), transaction.atomic():
        claimed = Schedule.objects.filter(
            name=row.name, paused=False, next_run_at=row.next_run_at
        ).update(next_run_at=following, last_run_at=tick_at)
        if not claimed:
            return None
        try:
            with transaction.atomic():
                result = _trigger(row, tick_at)
        except PloyError as error:  # e.g. an input over PLOY_MAX_PAYLOAD_BYTES: skip this tick
            logger.error("schedule %s: tick %s not started: %s", row.name, tick_at, error)
            return None
        Schedule.objects.filter(name=row.name).update(last_execution_id=result.execution_id)
    if tick_at > row.next_run_at:
        logger.info("schedule %s: missed ticks skipped, ran the latest (%s)", row.name, tick_at)
    return result.execution_id


def _trigger(row: Schedule, tick_at: datetime) -> runtime.TriggerResult:
    key = tick_key(row.name, tick_at)
    if row.calls_scheduled:
        return runtime.trigger(
            row.name,
            event_input(row.name, row.cron, tick_at),
            idempotency_key=key,
            binding=scheduled_binding(row.name),
        )
    return runtime.trigger(row.workflow, row.input, idempotency_key=key)


# -- pause and resume ---------------------------------------------------------------------------


def get_schedule(name: str) -> Schedule:
    schedule = Schedule.objects.select_related("last_execution").filter(name=name).first()
    if schedule is None:
        raise ScheduleNotFound(name)
    return schedule


def pause(name: str) -> Schedule:
    """No tick fires while paused."""
    with serialized():
        Schedule.objects.filter(name=name).update(paused=True)
    return get_schedule(name)


def resume(name: str, *, now: datetime | None = None) -> Schedule:
    """Ticks go on from the next one after now: those that fell in the pause are skipped."""
    now = now or clock.now()
    with serialized(), transaction.atomic():
        row = Schedule.objects.select_for_update().filter(name=name).first()
        if row is None:
            raise ScheduleNotFound(name)
        if row.paused:
            row.paused = False
            row.next_run_at = tick_after(row.cron, row.every_seconds, now)
            row.save(update_fields=["paused", "next_run_at"])
    return get_schedule(name)


def list_schedules() -> list[Schedule]:
    return list(Schedule.objects.select_related("last_execution").order_by("name"))
