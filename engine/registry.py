"""Import the `main` module once and map each workflow name to its handler and on_error hook."""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import logging
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from django.conf import settings

from engine import fingerprints, scheduled
from engine.config import PloyConfig, load_config, one_line, shown
from engine.errors import ConfigError, UnknownWorkflow
from engine.schedule_config import SCHEDULED_WORKFLOW

logger = logging.getLogger(__name__)

HANDLER_ARGUMENTS = ("input", "env", "step", "execution_id")
ON_ERROR_ARGUMENTS = ("env", "input", "execution_id")
DEFINITION_KEYS = ("handler", "on_error")


@dataclass(frozen=True, kw_only=True)
class WorkflowDefinition:
    name: str
    handler: Callable[..., object]
    on_error: Callable[..., object] | None
    # The keyword arguments each function's signature accepts, worked out once.
    arguments: frozenset[str]
    on_error_arguments: frozenset[str] = frozenset()


@dataclass(frozen=True, kw_only=True)
class Registry:
    config: PloyConfig
    workflows: dict[str, WorkflowDefinition]

    def definition(self, workflow: str) -> WorkflowDefinition:
        try:
            return self.workflows[workflow]
        except KeyError:
            raise UnknownWorkflow(workflow) from None

    def fingerprint(self, workflow: str) -> str | None:
        """The fingerprint of the code this process runs for `workflow` (None: not defined)."""
        definition = self.workflows.get(workflow)
        return fingerprints.of_handler(definition.handler) if definition else None


_current: Registry | None = None
_lock = threading.Lock()


def load(path: Path | str | None = None) -> Registry:
    """Load ploy.yaml and its module, and make them the process's registry."""
    global _current
    registry = read(path)
    with _lock:
        _current = registry
    return registry


def read(path: Path | str | None = None) -> Registry:
    """Load ploy.yaml and its module, leaving the process's registry as it is."""
    config = load_config(path or settings.PLOY_CONFIG)
    for warning in config.warnings:
        logger.warning("%s", warning)
    definitions = _definitions(config)
    for definition in definitions.values():
        fingerprints.of_handler(definition.handler)  # read now: the module as it was imported
    return Registry(config=config, workflows=definitions)


def current() -> Registry:
    if _current is None:
        return load()
    return _current


def _definitions(config: PloyConfig) -> dict[str, WorkflowDefinition]:
    module = _import_main(config.main)
    module_workflows = _workflows_of(config.main, module)
    definitions = {
        name: _definition(config.main, name, value) for name, value in module_workflows.items()
    }
    definitions.update(_scheduled_definitions(config, module, definitions))
    for binding in config.workflows:
        if binding.name not in definitions:
            names = (name if name.isprintable() else shown(name) for name in sorted(definitions))
            defined = one_line(", ".join(names), limit=120) or "none"
            near = difflib.get_close_matches(binding.name, list(definitions), n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise ConfigError(
                config.path,
                f"workflow.{binding.binding}: workflow '{binding.name}' is not defined in "
                f"{config.main.name} (it defines: {defined}): {hint}add it to `workflows` there "
                "or fix the name",
            )
    return definitions


def _scheduled_definitions(
    config: PloyConfig, module: ModuleType, definitions: dict[str, WorkflowDefinition]
) -> dict[str, WorkflowDefinition]:
    """The internal workflow of Ploy's `cron:` form, when a schedule uses it."""
    function = scheduled.scheduled_function(config, module)
    if function is None:
        return {}
    scheduled.check_no_clash(config.main, definitions)
    return {
        SCHEDULED_WORKFLOW: WorkflowDefinition(
            name=SCHEDULED_WORKFLOW,
            handler=scheduled.handler_for(function),
            on_error=None,
            arguments=frozenset({"input", "env", "step"}),
        )
    }


def _import_main(main: Path) -> ModuleType:
    digest = hashlib.sha1(str(main).encode()).hexdigest()[:10]
    module_name = f"ploy_workflows_{main.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, main)
    if spec is None or spec.loader is None:
        raise ConfigError(main, "it cannot be imported as a Python module: give it a .py name")
    module = importlib.util.module_from_spec(spec)
    # The module may import its neighbours, as a script would.
    if str(main.parent) not in sys.path:
        sys.path.insert(0, str(main.parent))
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as error:  # would end the process silently, in the middle of start-up
        del sys.modules[module_name]
        raise ConfigError(
            main,
            f"importing it called sys.exit({shown(error.code)}){_error_line(error, main)}: "
            "a workflow module must not exit; remove the call or guard it with "
            "`if __name__ == '__main__':`",
        ) from None
    except Exception as error:  # the user's module runs here
        del sys.modules[module_name]
        line = _error_line(error, main)
        raise ConfigError(
            main,
            f"importing it failed{line}: {type(error).__name__}: {one_line(str(error))}: "
            "fix the module",
        ) from error
    return module


def _workflows_of(main: Path, module: ModuleType) -> dict[str, Any]:
    workflows = getattr(module, "workflows", None)
    if not isinstance(workflows, dict):
        raise ConfigError(
            main,
            'it must define a dict `workflows = {"name": {"handler": '
            "fn}}`, got " + type(workflows).__name__,
        )
    return workflows


def _error_line(error: BaseException, main: Path) -> str:
    if isinstance(error, SyntaxError) and error.lineno:
        return f" at line {error.lineno}"
    frames = traceback.extract_tb(error.__traceback__)
    lines = [frame.lineno for frame in frames if Path(frame.filename) == main]
    return f" at line {lines[-1]}" if lines else ""


def _definition(main: Path, name: object, value: object) -> WorkflowDefinition:
    key = f"workflows[{shown(name)}]"
    if not isinstance(name, str) or not name:
        raise ConfigError(main, f"{key}: workflow names must be non-empty strings")
    if callable(value):
        value = {"handler": value}
    if not isinstance(value, dict):
        raise ConfigError(
            main, f"{key} must be a dict with a 'handler', got {type(value).__name__}"
        )
    for option in value:
        if option not in DEFINITION_KEYS:
            near = difflib.get_close_matches(
                str(option).lower().replace("onerror", "on_error"), DEFINITION_KEYS, n=1
            )
            hint = f"did you mean '{near[0]}'?" if near else "allowed: handler, on_error"
            raise ConfigError(
                main, f"{key}: unknown key {shown(option)} ({hint}): rename or remove it"
            )
    handler = _function(main, f"{key}['handler']", value.get("handler"))
    on_error = value.get("on_error")
    if on_error is not None:
        on_error = _function(main, f"{key}['on_error']", on_error)
    return WorkflowDefinition(
        name=name,
        handler=handler,
        on_error=on_error,
        arguments=_accepted_arguments(main, f"{key}['handler']", handler, HANDLER_ARGUMENTS),
        on_error_arguments=_accepted_arguments(
            main, f"{key}['on_error']", on_error, ON_ERROR_ARGUMENTS
        )
        if on_error
        else frozenset(),
    )


def _function(main: Path, key: str, value: object) -> Callable[..., object]:
    """A plain function (or another callable); a class is callable too, but not a workflow."""
    if isinstance(value, type):
        raise ConfigError(
            main, f"{key} must be a function, got the class {shown(value.__name__)}: use a def"
        )
    if not callable(value):
        raise ConfigError(main, f"{key} must be a function, got {shown(value)}")
    if inspect.iscoroutinefunction(value):
        raise ConfigError(
            main,
            f"{key} is async: ployweb calls workflow functions synchronously; "
            "define it with a plain def",
        )
    return value


def _accepted_arguments(
    main: Path, key: str, function: Callable[..., object], offered: tuple[str, ...]
) -> frozenset[str]:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        raise ConfigError(
            main, f"{key}: the signature of {shown(function)} cannot be read: use a def"
        ) from None
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return frozenset(offered)
    names = {parameter.name for parameter in parameters}
    return frozenset(argument for argument in offered if argument in names)
