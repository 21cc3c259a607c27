"""ploy.yaml -> frozen dataclasses; every mistake is refused with one line naming key and fix."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from engine.errors import ConfigError, UnknownWorkflow

DEFAULT_RETRIES = 3
KNOWN_KEYS = ("main", "workflow", "db")
# Ploy deployment keys: meaningless here, accepted so that a Ploy user's file loads.
DEPLOYMENT_KEYS = ("kind", "build", "out", "name", "assets")
# Ploy bindings this project does not provide yet.
UNSUPPORTED_KEYS = ("queue", "cron", "timer")
EXPANDED_KEYS = ("name", "retries")
BINDING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DATABASE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, kw_only=True)
class BindingConfig:
    binding: str
    name: str
    retries: int = DEFAULT_RETRIES


@dataclass(frozen=True, kw_only=True)
class DatabaseConfig:
    binding: str
    name: str


@dataclass(frozen=True, kw_only=True)
class PloyConfig:
    path: Path
    main: Path
    workflows: tuple[BindingConfig, ...] = ()
    databases: tuple[DatabaseConfig, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def root(self) -> Path:
        return self.path.parent

    def binding(self, name: str) -> BindingConfig:
        """A binding by its name, else the first binding of a workflow by the workflow's name."""
        for binding in self.workflows:
            if binding.binding == name:
                return binding
        for binding in self.workflows:
            if binding.name == name:
                return binding
        raise UnknownWorkflow(name)


class UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable: the safe loader reports it below
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    problem=f"the key {key!r} is given twice (remove one)",
                    problem_mark=key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: Path | str) -> PloyConfig:
    path = Path(path).resolve()
    raw = _read_yaml(path)
    warnings = []
    for key in raw:
        if key in DEPLOYMENT_KEYS:
            warnings.append(
                f"{path}: '{key}' is a Ploy deployment key with no meaning here; ignored"
            )
        elif key in UNSUPPORTED_KEYS:
            raise ConfigError(
                path,
                f"'{key}' bindings are not provided by ployweb yet: remove the '{key}' section",
            )
        elif key not in KNOWN_KEYS:
            raise ConfigError(path, _unknown_key(str(key), KNOWN_KEYS))
    workflows = _workflows(path, raw.get("workflow"))
    databases = _databases(path, raw.get("db"), {binding.binding for binding in workflows})
    return PloyConfig(
        path=path,
        main=_main(path, raw.get("main", "ploy.py")),
        workflows=workflows,
        databases=databases,
        warnings=tuple(warnings),
    )


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            path, "file not found: create it or set PLOY_CONFIG to its path"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            path, f"cannot read the file ({error}): check its permissions and encoding (UTF-8)"
        ) from None
    try:
        raw = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(path, f"invalid YAML{where}: {problem}: fix the syntax") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            path,
            f"the top level must be a mapping of keys (main, workflow, db), "
            f"got {type(raw).__name__}",
        )
    return raw


def _unknown_key(key: str, allowed: tuple[str, ...], prefix: str = "") -> str:
    near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f"did you mean '{near[0]}'?" if near else f"allowed keys: {', '.join(allowed)}"
    return f"unknown key '{prefix}{key}' ({hint}): rename or remove it"


def _main(path: Path, value: object) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, f"main must be the path of a Python file, got {value!r}")
    main = (path.parent / value).resolve()
    if main.suffix != ".py":
        raise ConfigError(path, f"main must name a .py file, got {value!r}")
    if not main.is_file():
        raise ConfigError(
            path, f"main: file {value!r} not found next to {path.name}: create it or fix the path"
        )
    return main


def _workflows(path: Path, section: object) -> tuple[BindingConfig, ...]:
    if section is None:
        return ()
    if not isinstance(section, dict):
        raise ConfigError(
            path,
            f"workflow must be a mapping of BINDING: workflow_name, got {type(section).__name__}",
        )
    return tuple(_binding(path, binding, value) for binding, value in section.items())


def _binding(path: Path, binding: object, value: object) -> BindingConfig:
    key = f"workflow.{binding}"
    _check_binding_name(path, key, binding)
    if isinstance(value, str):
        return BindingConfig(binding=binding, name=_workflow_name(path, key, value))
    if not isinstance(value, dict):
        raise ConfigError(
            path, f"{key} must be a workflow name or a mapping with name and retries, got {value!r}"
        )
    for option in value:
        if option not in EXPANDED_KEYS:
            raise ConfigError(path, _unknown_key(str(option), EXPANDED_KEYS, f"{key}."))
    if "name" not in value:
        raise ConfigError(path, f"{key}.name is missing: add the workflow's name")
    retries = value.get("retries", DEFAULT_RETRIES)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(path, f"{key}.retries must be a whole number >= 0, got {retries!r}")
    return BindingConfig(
        binding=binding, name=_workflow_name(path, f"{key}.name", value["name"]), retries=retries
    )


def _check_binding_name(path: Path, key: str, binding: object) -> None:
    if not isinstance(binding, str) or not BINDING_NAME.match(binding):
        raise ConfigError(
            path, f"{key}: binding names must be identifiers such as DATA_FLOW, got {binding!r}"
        )


def _workflow_name(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            path, f"{key} must be a workflow name (a non-empty string), got {value!r}"
        )
    return value


def _databases(path: Path, section: object, taken: set[str]) -> tuple[DatabaseConfig, ...]:
    if section is None:
        return ()
    if not isinstance(section, dict):
        raise ConfigError(
            path, f"db must be a mapping of BINDING: database_name, got {type(section).__name__}"
        )
    databases = []
    for binding, name in section.items():
        key = f"db.{binding}"
        _check_binding_name(path, key, binding)
        if binding in taken:
            raise ConfigError(
                path, f"{key}: the name {binding} is already a workflow binding: rename one of them"
            )
        if not isinstance(name, str) or not DATABASE_NAME.match(name):
            raise ConfigError(
                path,
                f"{key} must be a database name of letters, digits, '_', '.' or '-', got {name!r}",
            )
        databases.append(DatabaseConfig(binding=binding, name=name))
    return tuple(databases)
