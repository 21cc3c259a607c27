"""Ploy's `cron:` form: each tick is an execution of the internal workflow `scheduled`, whose one
step calls the main module's `scheduled(event, *, env)`, so a tick gets retries, attempts and a
page on the dashboard like any execution."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, TypedDict

from engine.config import PloyConfig
from engine.errors import ConfigError, NonRetryableError
from engine.schedule_config import SCHEDULED_WORKFLOW

if TYPE_CHECKING:
    from engine.context import StepContext

STEP_NAME = "scheduled"


class TickInput(TypedDict):
    """The execution input of one tick: what the dashboard shows, and the event rebuilt from."""

    name: str
    cron: str
    scheduledTime: int  # noqa: N815 - camelCase, as Ploy's event and the API's JSON


@dataclass(kw_only=True)
class ScheduledEvent:
    """What `scheduled(event, *, env)` receives, as Ploy's ScheduledEvent: the cron name and
    expression, and the tick's time in milliseconds since the epoch."""

    name: str
    cron: str
    scheduled_time: int
    _retry: bool = field(default=True, repr=False)

    @property
    def scheduled_at(self) -> datetime:
        return datetime.fromtimestamp(self.scheduled_time / 1000, tz=UTC)

    def no_retry(self) -> None:
        """If this call raises afterwards, fail the tick at once instead of retrying it."""
        self._retry = False

    @property
    def retries(self) -> bool:
        return self._retry


def event_input(name: str, cron: str, tick: datetime) -> TickInput:
    return {"name": name, "cron": cron, "scheduledTime": round(tick.timestamp() * 1000)}


def scheduled_function(config: PloyConfig, module: ModuleType) -> Callable[..., object] | None:
    """The module's `scheduled`, required as soon as one schedule uses Ploy's form."""
    ploy_form = [schedule.name for schedule in config.schedules if schedule.calls_scheduled]
    if not ploy_form:
        return None
    function = getattr(module, "scheduled", None)
    key = f"cron.{ploy_form[0]}"
    if function is None:
        raise ConfigError(
            config.path,
            f"{key} calls scheduled(event, *, env), which {config.main.name} does not define: "
            "add `def scheduled(event, *, env): ...` there, or give the schedule a workflow:",
        )
    if isinstance(function, type) or not callable(function):
        raise ConfigError(
            config.main, f"scheduled must be a function (for {key}), got {function!r}: use a def"
        )
    if inspect.iscoroutinefunction(function):
        raise ConfigError(
            config.main,
            "scheduled is async: ployweb calls it synchronously; define it with a plain def",
        )
    return function  # type: ignore[no-any-return]  # the module's attribute, checked above


def handler_for(function: Callable[..., object]) -> Callable[..., object]:
    """The internal workflow's handler: one step that calls `function` with the tick's event."""
    accepts_env = _accepts(function, "env")

    def run_scheduled(*, input: TickInput, env: object, step: StepContext) -> None:
        event = ScheduledEvent(
            name=input["name"], cron=input["cron"], scheduled_time=input["scheduledTime"]
        )
        step.run(STEP_NAME, lambda: _call(function, event, env, accepts_env))

    return run_scheduled


def _call(
    function: Callable[..., object], event: ScheduledEvent, env: object, accepts_env: bool
) -> None:
    try:
        function(event, **({"env": env} if accepts_env else {}))
    except Exception as error:  # the user's function: retried unless it said no_retry()
        if not event.retries:
            raise NonRetryableError(f"{type(error).__name__}: {error}") from error
        raise


def _accepts(function: Callable[..., object], name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        parameter.name == name or parameter.kind is inspect.Parameter.VAR_KEYWORD
        for parameter in parameters
    )


def check_no_clash(path: Path, workflows: Mapping[str, object]) -> None:
    if SCHEDULED_WORKFLOW in workflows:
        raise ConfigError(
            path,
            f"workflows[{SCHEDULED_WORKFLOW!r}]: the name is the one Ploy's cron: form runs "
            "under: rename the workflow",
        )
