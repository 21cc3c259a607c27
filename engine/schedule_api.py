"""`GET /api/schedules`, and pausing and resuming one: the `cron:` entries of ploy.yaml as their
rows stand (the dashboard's Schedules page and the admin act through the same engine.schedules)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Field, Router

from engine import schedules
from engine.models import Schedule
from engine.schemas import CamelSchema, ErrorOut, UtcTime

router = Router(by_alias=True)


class ScheduleOut(CamelSchema):
    name: str = Field(description="Its key under cron: in ploy.yaml.")
    schedule: str = Field(description='A 5-field cron expression (UTC), or "every 10s".')
    workflow: str = Field(
        description="The binding it triggers; `scheduled` for Ploy's form, which calls the "
        "main module's scheduled(event, *, env)."
    )
    next_run_at: UtcTime | None = Field(description="Its next tick; null while paused.")
    last_execution_id: str | None = Field(description="The execution of its latest tick.")
    paused: bool


def schedule_out(row: Schedule) -> ScheduleOut:
    return ScheduleOut(
        name=row.name,
        schedule=row.schedule,
        workflow=row.workflow,
        next_run_at=None if row.paused else row.next_run_at,
        last_execution_id=str(row.last_execution_id) if row.last_execution_id else None,
        paused=row.paused,
    )


@router.get(
    "/schedules",
    operation_id="listSchedules",
    response={200: list[ScheduleOut], 401: ErrorOut},
    tags=["schedules"],
)
def list_schedules(request: HttpRequest) -> list[ScheduleOut]:
    """Every schedule of ploy.yaml's cron: section, by name."""
    return [schedule_out(row) for row in schedules.list_schedules()]


@router.post(
    "/schedules/{name}/pause",
    operation_id="pauseSchedule",
    response={200: ScheduleOut, 401: ErrorOut, 404: ErrorOut},
    tags=["schedules"],
)
def pause_schedule(request: HttpRequest, name: str) -> ScheduleOut:
    """No tick fires until it is resumed."""
    return schedule_out(schedules.pause(name))


@router.post(
    "/schedules/{name}/resume",
    operation_id="resumeSchedule",
    response={200: ScheduleOut, 401: ErrorOut, 404: ErrorOut},
    tags=["schedules"],
)
def resume_schedule(request: HttpRequest, name: str) -> ScheduleOut:
    """Ticks go on from the next one after now; those that fell in the pause are skipped."""
    return schedule_out(schedules.resume(name))
