"""The `cron:` section of ploy.yaml: Ploy's `NAME: "<cron>"` form and the workflow form, each
refused at start-up with one line naming the key, the bad value and the fix."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from croniter import CroniterBadDateError, CroniterError, croniter

from engine.config import (
    BINDING_NAME,
    BindingConfig,
    _key_name,
    _unknown_key,
    one_line,
    parse_duration,
    shown,
)
from engine.errors import ConfigError

SCHEDULE_KEYS = ("schedule", "every", "workflow", "input")
CRON_FIELDS = "minute hour day-of-month month day-of-week"
# The internal workflow that runs Ploy's form: it calls the main module's scheduled().
SCHEDULED_WORKFLOW = "scheduled"


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    name: str
    cron: str | None = None  # a 5-field cron expression, read in UTC
    every: float | None = None  # or an interval, in seconds
    every_text: str = ""  # the interval as written, for display
    # A binding of `workflow:`; None for Ploy's form, which calls `scheduled(event, *, env)`.
    workflow: str | None = None
    input: object = None

    @property
    def expression(self) -> str:
        """What the dashboard and the API show: the cron expression, or `every 10s`."""
        return self.cron if self.cron is not None else f"every {self.every_text}"

    @property
    def calls_scheduled(self) -> bool:
        return self.workflow is None


def scheduled_binding(name: str) -> BindingConfig:
    """The binding an execution of Ploy's form runs under: the schedule's name."""
    return BindingConfig(binding=name, name=SCHEDULED_WORKFLOW)


def check_cron(what: str, value: object) -> str:
    """A 5-field cron expression that matches some time, else ValueError naming `what`."""
    example = 'e.g. "*/5 * * * *"'
    if not isinstance(value, str) or len(value.split()) != 5:
        raise ValueError(
            f"{what} must be a cron expression of 5 fields ({CRON_FIELDS}, UTC, {example}), "
            f"got {shown(value)}: quote it and give exactly 5 fields"
        )
    expression = " ".join(value.split())
    try:
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(
            f"{what}: the cron expression {shown(value)} matches no date: fix the day and month"
        ) from None
    except (CroniterError, ValueError, KeyError, IndexError, TypeError, OverflowError) as error:
        raise ValueError(
            f"{what} is not a valid cron expression ({one_line(str(error), 100)}), got "
            f"{shown(value)}: use 5 fields ({CRON_FIELDS}), {example}"
        ) from None
    return expression


def parse_schedules(
    path: Path, section: object, workflows: tuple[BindingConfig, ...]
) -> tuple[ScheduleConfig, ...]:
    if section is None:
        return ()
    if not isinstance(section, dict):
        raise ConfigError(
            path,
            'cron must be a mapping of NAME: "<cron expression>" or NAME: {schedule, workflow, '
            f"input}}, got {type(section).__name__}",
        )
    bindings = tuple(binding.binding for binding in workflows)
    return tuple(_schedule(path, name, value, bindings) for name, value in section.items())


def _schedule(path: Path, name: object, value: object, bindings: tuple[str, ...]) -> ScheduleConfig:
    key = f"cron.{_key_name(name)}"
    if not isinstance(name, str) or not BINDING_NAME.fullmatch(name):
        raise ConfigError(
            path,
            f"{key}: schedule names must be identifiers of at most 100 characters such as "
            f"NIGHTLY_REPORT, got {shown(name)}",
        )
    try:
        if isinstance(value, dict):
            return _workflow_form(key, name, value, bindings)
        if name in bindings:
            raise ValueError(
                f"{key}: the name {name} is already a workflow binding, and Ploy's form "
                "runs under its own name: rename the schedule"
            )
        return ScheduleConfig(name=name, cron=check_cron(key, value))
    except ValueError as error:
        raise ConfigError(path, str(error)) from None


def _workflow_form(
    key: str, name: str, value: dict[object, object], bindings: tuple[str, ...]
) -> ScheduleConfig:
    for option in value:
        if option not in SCHEDULE_KEYS:
            raise ValueError(_unknown_key(option, SCHEDULE_KEYS, f"{key}."))
    if ("schedule" in value) == ("every" in value):
        raise ValueError(
            f"{key} needs exactly one of schedule (a 5-field cron expression) or every "
            "(a duration such as 10s): give one of them"
        )
    cron = check_cron(f"{key}.schedule", value["schedule"]) if "schedule" in value else None
    every, every_text = None, ""
    if "every" in value:
        every = parse_duration(f"{key}.every", value["every"])
        raw = value["every"]
        every_text = raw.strip() if isinstance(raw, str) else f"{every:g}s"
    return ScheduleConfig(
        name=name,
        cron=cron,
        every=every,
        every_text=every_text,
        workflow=_target(key, value.get("workflow"), bindings),
        input=_input(key, value.get("input")),
    )


def _target(key: str, workflow: object, bindings: tuple[str, ...]) -> str:
    if workflow is None:
        raise ValueError(f"{key}.workflow is missing: name the binding of workflow: it triggers")
    if isinstance(workflow, str) and workflow in bindings:
        return workflow
    near = difflib.get_close_matches(str(workflow), bindings, n=1)
    hint = f"did you mean '{near[0]}'? " if near else ""
    known = one_line(", ".join(bindings), limit=120) or "none"
    raise ValueError(
        f"{key}.workflow must be a binding of workflow: (it has: {known}), got "
        f"{shown(workflow)}: {hint}fix the name or add the binding"
    )


def _input(key: str, value: object) -> object:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{key}.input must be JSON ({one_line(str(error), 80)}), got {shown(value)}: "
            "quote dates and other values YAML reads as non-JSON types"
        ) from None
