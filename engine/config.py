"""ploy.yaml -> frozen dataclasses; every mistake is refused with one line naming key and fix."""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from engine.errors import ConfigError, UnknownWorkflow

DEFAULT_RETRIES = 3
# More retries than this is a typo (and no database column holds 10**20): refused up front.
MAX_RETRIES = 1000
KNOWN_KEYS = ("main", "workflow", "db")
DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)")
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_SECONDS = 365 * 86400
# Ploy deployment keys: meaningless here, accepted so that a Ploy user's file loads.
DEPLOYMENT_KEYS = ("kind", "build", "out", "name", "assets")
# Ploy bindings this project does not provide yet.
UNSUPPORTED_KEYS = ("queue", "cron", "timer")
EXPANDED_KEYS = ("name", "retries", "timeout")
# Matched whole (fullmatch): `$` alone would let a trailing newline through.
BINDING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
DATABASE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
# The widths of Execution.workflow: a longer name could never be stored.
MAX_WORKFLOW_NAME = 200
# Nodes of the document with every alias expanded: far above any real ploy.yaml, far below a
# "billion laughs" bomb, whose values would take gigabytes to walk or print.
MAX_EXPANDED_NODES = 10_000
# What scalar constructors raise on a malformed tagged value (`!!int x`, `!!bool maybe`).
SCALAR_ERRORS = (ValueError, LookupError, AttributeError, TypeError, OverflowError)


@dataclass(frozen=True, kw_only=True)
class BindingConfig:
    binding: str
    name: str
    retries: int = DEFAULT_RETRIES
    timeout: float | None = None  # seconds from its creation until the execution fails


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


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple = 2, 3, 3, 3
_SHORT.maxset = _SHORT.maxfrozenset = 3
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 60


def shown(value: object, limit: int = 80) -> str:
    """`value` as an error message quotes it: one line, at most `limit` characters."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def parse_duration(what: str, value: object) -> float:
    """A number of seconds, or a string with ms, s, m, h or d ("90s", "1h"); at most a year."""
    seconds: Any = value
    if isinstance(value, str):
        match = DURATION.fullmatch(value.strip())
        seconds = float(match[1]) * DURATION_UNITS[match[2]] if match else None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        seconds = None
    if seconds is None or not 0 < seconds <= MAX_DURATION_SECONDS:
        raise ValueError(
            f"{what} must be a duration: seconds > 0, or a number with ms, s, m, h or d "
            f"(e.g. 90s, 1h), at most 365d, got {shown(value)}"
        )
    return float(seconds)


def check_retries(what: str, retries: object) -> int:
    """`retries` as a count of retries, else ValueError naming `what` (a key or a call)."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"{what} must be a whole number >= 0, got {shown(retries)}")
    if retries > MAX_RETRIES:
        raise ValueError(
            f"{what} must be at most {MAX_RETRIES}, got {shown(retries)}: use a smaller number"
        )
    return retries


class PloyLoader(yaml.SafeLoader):
    """The safe loader, refusing what it would accept silently or choke on: a key given twice,
    an alias bomb, a tagged scalar its constructor cannot read."""

    def construct_document(self, node: Node) -> object:
        _check_expanded_size(node)
        return super().construct_document(node)

    def construct_object(self, node: Node, deep: bool = False) -> object:
        try:
            return super().construct_object(node, deep=deep)
        except SCALAR_ERRORS:
            if not isinstance(node, ScalarNode):
                raise
            raise yaml.constructor.ConstructorError(
                problem=f"{shown(node.value)} is not a valid {node.tag.rsplit(':', 1)[-1]}",
                problem_mark=node.start_mark,
                note="fix the value",
            ) from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        # Plain YAML keeps the last of two equal keys; merged keys (`<<: *base`) may be
        # overridden, so only the mapping's own keys are compared.
        seen = set()
        for key_node, _ in node.value if isinstance(node, MappingNode) else ():
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # the safe loader reports it below
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"the key {shown(key)} is given twice (remove one)",
                    problem_mark=key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def _check_expanded_size(root: Node) -> None:
    """Count the nodes as if every alias were copied, visiting each distinct node once."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # the ancestors of the node being visited
    pending: list[tuple[Node, bool]] = [(root, False)]
    while pending:
        node, children_done = pending.pop()
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[id(node)] > MAX_EXPANDED_NODES:
                raise yaml.composer.ComposerError(
                    problem=f"its aliases expand to more than {MAX_EXPANDED_NODES} values "
                    "(an alias bomb?)",
                    problem_mark=node.start_mark,
                    note="use fewer aliases",
                )
        elif id(node) in open_nodes:
            raise yaml.composer.ComposerError(
                problem="an alias refers to a value that contains it",
                problem_mark=node.start_mark,
                note="remove the loop",
            )
        elif id(node) not in sizes:
            open_nodes.add(id(node))
            pending.append((node, True))
            pending.extend((child, False) for child in _children(node))


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
            raise ConfigError(path, _unknown_key(key, KNOWN_KEYS))
    workflows = _workflows(path, raw.get("workflow"))
    databases = _databases(path, raw.get("db"), {binding.binding for binding in workflows})
    return PloyConfig(
        path=path,
        main=_main(path, raw.get("main", "ploy.py")),
        workflows=workflows,
        databases=databases,
        warnings=tuple(warnings),
    )


def _read_yaml(path: Path) -> dict[str, Any]:
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
        raw = yaml.load(text, Loader=PloyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        fix = getattr(error, "note", None) or "fix the syntax"
        raise ConfigError(path, f"invalid YAML{where}: {one_line(problem)}: {fix}") from None
    except RecursionError:
        raise ConfigError(
            path, "invalid YAML: values nested too deeply: flatten the document"
        ) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            path,
            f"the top level must be a mapping of keys (main, workflow, db), "
            f"got {type(raw).__name__}",
        )
    return raw


def one_line(text: str, limit: int = 200) -> str:
    """`text` for a one-line message: blanks and line breaks collapsed, at most `limit` long."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _key_name(key: object) -> str:
    """A key as a key path shows it: as written when short and printable, else escaped."""
    text = key if isinstance(key, str) else shown(key)
    if len(text) <= 60 and text.isprintable():
        return text
    return shown(key)[1:-1] if isinstance(key, str) else shown(key)


def _unknown_key(key: object, allowed: tuple[str, ...], prefix: str = "") -> str:
    name = _key_name(key)
    near = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    hint = f"did you mean '{near[0]}'?" if near else f"allowed keys: {', '.join(allowed)}"
    return f"unknown key '{prefix}{name}' ({hint}): rename or remove it"


def _main(path: Path, value: object) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, f"main must be the path of a Python file, got {shown(value)}")
    if Path(value).suffix != ".py":
        raise ConfigError(path, f"main must name a .py file, got {shown(value)}")
    try:
        main = (path.parent / value).resolve()
        found = main.is_file()
    except (OSError, ValueError):  # a NUL, a character the file system cannot encode, too long
        found = False
    if not found:
        raise ConfigError(
            path,
            f"main: file {shown(value)} not found next to {path.name}: create it or fix the path",
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
    key = f"workflow.{_key_name(binding)}"
    _check_binding_name(path, key, binding)
    if isinstance(value, str):
        return BindingConfig(binding=str(binding), name=_workflow_name(path, key, value))
    if not isinstance(value, dict):
        raise ConfigError(
            path,
            f"{key} must be a workflow name or a mapping with name and retries, got {shown(value)}",
        )
    for option in value:
        if option not in EXPANDED_KEYS:
            raise ConfigError(path, _unknown_key(option, EXPANDED_KEYS, f"{key}."))
    if "name" not in value:
        raise ConfigError(path, f"{key}.name is missing: add the workflow's name")
    try:
        retries = check_retries(f"{key}.retries", value.get("retries", DEFAULT_RETRIES))
        timeout = value.get("timeout")
        timeout = None if timeout is None else parse_duration(f"{key}.timeout", timeout)
    except ValueError as error:
        raise ConfigError(path, str(error)) from None
    name = _workflow_name(path, f"{key}.name", value["name"])
    return BindingConfig(binding=str(binding), name=name, retries=retries, timeout=timeout)


def _check_binding_name(path: Path, key: str, binding: object) -> None:
    if not isinstance(binding, str) or not BINDING_NAME.fullmatch(binding):
        raise ConfigError(
            path,
            f"{key}: binding names must be identifiers of at most 100 characters such as "
            f"DATA_FLOW, got {shown(binding)}",
        )


def _workflow_name(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            path, f"{key} must be a workflow name (a non-empty string), got {shown(value)}"
        )
    if len(value) > MAX_WORKFLOW_NAME or not value.isprintable():
        raise ConfigError(
            path,
            f"{key} must be a workflow name of at most {MAX_WORKFLOW_NAME} printable "
            f"characters (no NUL, newline or tab), got {shown(value)}",
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
        key = f"db.{_key_name(binding)}"
        _check_binding_name(path, key, binding)
        if binding in taken:
            raise ConfigError(
                path, f"{key}: the name {binding} is already a workflow binding: rename one of them"
            )
        if not isinstance(name, str) or not DATABASE_NAME.fullmatch(name):
            raise ConfigError(
                path,
                f"{key} must be a database name of letters, digits, '_', '.' or '-', "
                f"got {shown(name)}",
            )
        databases.append(DatabaseConfig(binding=binding, name=name))
    return tuple(databases)
