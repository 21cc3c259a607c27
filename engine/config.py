"""ploy.yaml -> frozen dataclasses; every mistake is refused with one line naming key and fix."""

from __future__ import annotations

import difflib
import os
import re
import reprlib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from engine.errors import ConfigError, UnknownWorkflow

if TYPE_CHECKING:
    from engine.schedule_config import ScheduleConfig

DEFAULT_RETRIES = 3
# More retries than this is a typo (and no database column holds 10**20): refused up front.
MAX_RETRIES = 1000
KNOWN_KEYS = ("main", "workflow", "db", "cron")
DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)")
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_SECONDS = 365 * 86400
# Ploy deployment keys: meaningless here, accepted so that a Ploy user's file loads.
DEPLOYMENT_KEYS = ("kind", "build", "out", "name", "assets")
# Ploy bindings this project does not provide yet.
UNSUPPORTED_KEYS = ("queue", "timer")
EXPANDED_KEYS = ("name", "retries", "timeout", "concurrency", "concurrency_key")
# More executions at once than this is a typo: a limit that high limits nothing.
MAX_CONCURRENCY = 10_000
# A dotted path into the input: identifiers-ish segments (letters, digits, _ and -).
CONCURRENCY_KEY = re.compile(r"[A-Za-z0-9_-]{1,100}(?:\.[A-Za-z0-9_-]{1,100}){0,9}")
# Matched whole (fullmatch): `$` alone would let a trailing newline through.
BINDING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
DATABASE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
# The keys of a server database binding (`DB: {url: ...}` or `DB: {url_env: ...}`).
SERVER_DATABASE_KEYS = ("url", "url_env")
SERVER_DATABASE_SCHEMES = ("postgres", "postgresql")
ENVIRONMENT_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
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
    concurrency: int | None = None  # at most this many of its executions run at once
    concurrency_key: str | None = None  # ... per value of this dotted path into the input


@dataclass(frozen=True, kw_only=True)
class DatabaseConfig:
    binding: str
    name: str  # the SQLite file's name; "" for a server database
    # A server database (PostgreSQL): its URL, never shown (it may hold a password), and the
    # environment variable it was read from, if any.
    url: str | None = field(default=None, repr=False)
    url_env: str = ""

    @property
    def is_server(self) -> bool:
        return self.url is not None


@dataclass(frozen=True, kw_only=True)
class PloyConfig:
    path: Path
    main: Path
    workflows: tuple[BindingConfig, ...] = ()
    databases: tuple[DatabaseConfig, ...] = ()
    schedules: tuple[ScheduleConfig, ...] = ()
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


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> PloyConfig:
    """`environ` (the process's environment by default) holds what `url_env` names."""
    from engine.schedule_config import parse_schedules  # it builds on this module's helpers

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
    taken = {binding.binding for binding in workflows}
    databases = _databases(path, raw.get("db"), taken, os.environ if environ is None else environ)
    return PloyConfig(
        path=path,
        main=_main(path, raw.get("main", "ploy.py")),
        workflows=workflows,
        databases=databases,
        schedules=parse_schedules(path, raw.get("cron"), workflows),
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
        concurrency, concurrency_key = _concurrency(key, value)
    except ValueError as error:
        raise ConfigError(path, str(error)) from None
    name = _workflow_name(path, f"{key}.name", value["name"])
    return BindingConfig(
        binding=str(binding),
        name=name,
        retries=retries,
        timeout=timeout,
        concurrency=concurrency,
        concurrency_key=concurrency_key,
    )


def _concurrency(key: str, value: dict[str, Any]) -> tuple[int | None, str | None]:
    """`concurrency` (a limit) and `concurrency_key` (a dotted path, only with a limit)."""
    limit, path = value.get("concurrency"), value.get("concurrency_key")
    if limit is None and path is not None:
        raise ValueError(
            f"{key}.concurrency_key needs {key}.concurrency: add the limit, or remove the key"
        )
    if limit is None:
        return None, None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CONCURRENCY:
        raise ValueError(
            f"{key}.concurrency must be a whole number from 1 to {MAX_CONCURRENCY}, "
            f"got {shown(limit)}"
        )
    if path is not None and not (isinstance(path, str) and CONCURRENCY_KEY.fullmatch(path)):
        raise ValueError(
            f"{key}.concurrency_key must be a dotted path into the input such as customer or "
            f"customer.id, got {shown(path)}"
        )
    return limit, path


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


def _databases(
    path: Path, section: object, taken: set[str], environ: Mapping[str, str]
) -> tuple[DatabaseConfig, ...]:
    if section is None:
        return ()
    if not isinstance(section, dict):
        raise ConfigError(
            path, f"db must be a mapping of BINDING: database_name, got {type(section).__name__}"
        )
    databases = []
    for binding, value in section.items():
        key = f"db.{_key_name(binding)}"
        _check_binding_name(path, key, binding)
        if binding in taken:
            raise ConfigError(
                path, f"{key}: the name {binding} is already a workflow binding: rename one of them"
            )
        if isinstance(value, dict):
            databases.append(_server_database(path, key, binding, value, environ))
            continue
        if not isinstance(value, str) or not DATABASE_NAME.fullmatch(value):
            raise ConfigError(
                path,
                f"{key} must be a database name of letters, digits, '_', '.' or '-', "
                f"or a mapping with url or url_env, got {shown(value)}",
            )
        databases.append(DatabaseConfig(binding=binding, name=value))
    return tuple(databases)


def _server_database(
    path: Path, key: str, binding: str, value: dict[str, Any], environ: Mapping[str, str]
) -> DatabaseConfig:
    """`{url: postgres://...}` or `{url_env: NAME}`; the URL itself is never quoted back."""
    for option in value:
        if option not in SERVER_DATABASE_KEYS:
            raise ConfigError(path, _unknown_key(option, SERVER_DATABASE_KEYS, f"{key}."))
    if len(value) != 1:
        raise ConfigError(
            path,
            f"{key} needs exactly one of url (postgres://user@host:5432/name) or url_env "
            "(the name of an environment variable holding it)"
            + (": remove one" if len(value) > 1 else ""),
        )
    if "url_env" in value:
        name = value["url_env"]
        if not isinstance(name, str) or not ENVIRONMENT_VARIABLE.fullmatch(name):
            raise ConfigError(
                path,
                f"{key}.url_env must be the name of an environment variable, got {shown(name)}",
            )
        url = environ.get(name, "")
        if not url.strip():
            raise ConfigError(
                path,
                f"{key}.url_env: the environment variable {name} is not set: set it to the "
                "database's URL (postgres://user@host:5432/name)",
            )
        _check_server_url(path, f"{key}.url_env ({name})", url)
        return DatabaseConfig(binding=binding, name="", url=url.strip(), url_env=name)
    url = value["url"]
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(path, f"{key}.url must be a URL such as postgres://user@host:5432/name")
    _check_server_url(path, f"{key}.url", url)
    return DatabaseConfig(binding=binding, name="", url=url.strip())


def _check_server_url(path: Path, key: str, url: str) -> None:
    """A PostgreSQL URL libpq can read; errors name the scheme at most, never the URL."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    scheme = urlsplit(url.strip()).scheme if "://" in url else ""
    if scheme.lower() not in SERVER_DATABASE_SCHEMES:
        got = f"the scheme {shown(scheme)}" if scheme else "no scheme"
        raise ConfigError(
            path,
            f"{key}: unsupported database URL ({got}): use postgres://user@host:5432/name, "
            "or a database name for a SQLite file",
        )
    try:
        conninfo_to_dict(url.strip())
    except ProgrammingError:
        raise ConfigError(
            path, f"{key}: not a valid PostgreSQL URL: fix it (postgres://user@host:5432/name)"
        ) from None
