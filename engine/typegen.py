"""`manage.py ploy_types`: ploy_env.py, the bindings of ploy.yaml typed from the handlers'
annotations, so that mypy and pyright check `env.DATA_FLOW.trigger(...)` against the handler."""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

from engine.config import PloyConfig, one_line
from engine.errors import ConfigError
from engine.registry import Registry

FILE_NAME = "ploy_env.py"
CLASS_NAME = "PloyEnv"
LINE_LENGTH = 100
HEADER = (
    '"""The bindings of ploy.yaml, typed: written by `python manage.py ploy_types`; do not edit."""'
)
SECTIONS = ("stdlib", "third-party", "first-party")  # isort's order, after __future__


def env_path(config: PloyConfig) -> Path:
    """ploy_env.py sits beside ploy.yaml."""
    return config.root / FILE_NAME


def render(registry: Registry) -> str:
    """The text of ploy_env.py: deterministic, and as ruff formats and sorts it."""
    config = registry.config
    names = _Names(config)
    lines = []
    for binding in config.workflows:
        handler = registry.definition(binding.name).handler
        hints = [_hint(config, binding.name, handler, what) for what in ("input", "return")]
        input_type, output_type = (names.render(hint) for hint in hints)
        base = names.imported("engine.bindings", "WorkflowBinding")
        lines.append(_attribute(binding.binding, base, [input_type, output_type]))
    for database in config.databases:
        lines.append(f"    {database.binding}: {names.imported('engine.database', 'Database')}")
    body = "\n".join(lines) or "    pass"
    docstring = '    """`get_ploy_context(PloyEnv).env`: one attribute per binding of ploy.yaml."""'
    return (
        f"{HEADER}\n\nfrom __future__ import annotations\n\nfrom typing import TYPE_CHECKING\n\n"
        f"if TYPE_CHECKING:\n{names.import_block()}\n\n\nclass {CLASS_NAME}:\n{docstring}\n\n"
        f"{body}\n"
    )


def is_up_to_date(registry: Registry) -> bool:
    path = env_path(registry.config)
    return path.is_file() and path.read_text(encoding="utf-8") == render(registry)


def write(registry: Registry) -> Path:
    path = env_path(registry.config)
    path.write_text(render(registry), encoding="utf-8")
    return path


def _attribute(name: str, base: str, arguments: list[str]) -> str:
    line = f"    {name}: {base}[{', '.join(arguments)}]"
    if len(line) <= LINE_LENGTH:
        return line
    # ruff format's exploded form, kept by the magic trailing comma.
    return "\n".join([f"    {name}: {base}[", *(f"        {a}," for a in arguments), "    ]"])


def _hint(config: PloyConfig, workflow: str, handler: Callable[..., object], what: str) -> object:
    """The evaluated annotation of the handler's `input` parameter or of its return value;
    `Any` where there is none."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return typing.Any
    if what == "return":
        raw: object = signature.return_annotation
    else:
        parameter = signature.parameters.get("input")
        raw = parameter.annotation if parameter is not None else inspect.Parameter.empty
    if raw is inspect.Parameter.empty:
        return typing.Any
    if not isinstance(raw, str):
        return raw
    function = inspect.unwrap(getattr(handler, "func", handler))  # a functools.partial's too
    namespace = getattr(function, "__globals__", {})
    try:
        return eval(raw, namespace)  # the module's own annotation, in the module's namespace
    except Exception as error:
        raise ConfigError(
            config.main,
            f"workflows[{workflow!r}]: the {what} annotation {raw!r} cannot be resolved "
            f"({type(error).__name__}: {one_line(str(error))}): import that type at the "
            "module's top level, not only under `if TYPE_CHECKING:`",
        ) from None


class _Names:
    """The imports a rendering needs, by module, and how each type is spelled."""

    def __init__(self, config: PloyConfig) -> None:
        self._config = config
        self._imports: dict[str, set[str]] = {}
        self._modules: dict[str, str] = {}  # imported name -> its module

    def imported(self, module: str, name: str) -> str:
        known = self._modules.setdefault(name, module)
        if known != module:
            raise ConfigError(
                self._config.main,
                f"two types named {name!r} are used in handler annotations ({known} and "
                f"{module}): rename one of them",
            )
        self._imports.setdefault(module, set()).add(name)
        return name

    def render(self, hint: object) -> str:
        if hint is typing.Any or isinstance(hint, typing.TypeVar):
            return self.imported("typing", "Any")
        if hint is None or hint is type(None):
            return "None"
        if hint is Ellipsis:
            return "..."
        origin = typing.get_origin(hint)
        if origin is not None:
            return self._generic(origin, typing.get_args(hint))
        if isinstance(hint, type | typing.NewType):
            return self._named(hint)
        return self.imported("typing", "Any")

    def _generic(self, origin: object, arguments: tuple[object, ...]) -> str:
        if origin is typing.Union or origin is types.UnionType:
            return " | ".join(self.render(argument) for argument in arguments)
        if origin is typing.Annotated:
            return self.render(arguments[0])
        if origin is typing.Literal:
            return f"{self.imported('typing', 'Literal')}[{', '.join(map(repr, arguments))}]"
        parts = [
            f"[{', '.join(map(self.render, argument))}]"
            if isinstance(argument, list)
            else self.render(argument)
            for argument in arguments
        ]
        base = self.render(origin)
        return f"{base}[{', '.join(parts)}]" if parts else base

    def _named(self, hint: type | typing.NewType) -> str:
        module = getattr(hint, "__module__", "")
        qualname = str(getattr(hint, "__qualname__", None) or getattr(hint, "__name__", ""))
        if module == "builtins":
            return qualname
        if not module or not qualname or "<locals>" in qualname:
            return self.imported("typing", "Any")  # nothing importable names it
        top, _, rest = qualname.partition(".")
        name = self.imported(self._importable(module), top)
        return f"{name}.{rest}" if rest else name

    def _importable(self, module: str) -> str:
        """The main module is loaded under a private name: import it by its path instead."""
        file = getattr(sys.modules.get(module), "__file__", None)
        main = self._config.main.resolve()
        if file is None or Path(file).resolve() != main:
            return module
        try:
            relative = main.relative_to(self._config.root.resolve()).with_suffix("")
        except ValueError:
            return main.stem
        return ".".join(relative.parts)

    def import_block(self) -> str:
        groups: dict[str, list[str]] = {section: [] for section in SECTIONS}
        for module in sorted(self._imports, key=lambda name: (name.lower(), name)):
            members = sorted(self._imports[module], key=_member_order)
            groups[self._section(module)].append(_from_import(module, members))
        return "\n\n".join("\n".join(group) for group in groups.values() if group)

    def _section(self, module: str) -> str:
        top = module.partition(".")[0]
        if top in sys.stdlib_module_names:
            return "stdlib"
        root = _ruff_root(self._config.root)
        if (root / top).is_dir() or (root / f"{top}.py").is_file():
            return "first-party"
        return "third-party"


def _member_order(name: str) -> tuple[int, str]:
    """isort's order by type: CONSTANTS, then Classes, then the rest."""
    if name.isupper() and len(name) > 1:
        return (0, name)
    return (1, name) if name[:1].isupper() else (2, name)


def _from_import(module: str, members: list[str]) -> str:
    line = f"    from {module} import {', '.join(members)}"
    if len(line) <= LINE_LENGTH:
        return line
    return "\n".join([f"    from {module} import (", *(f"        {m}," for m in members), "    )"])


def _ruff_root(folder: Path) -> Path:
    """Where ruff looks for first-party modules: the folder of the nearest configuration."""
    for candidate in (folder, *folder.parents):
        if any((candidate / name).is_file() for name in ("pyproject.toml", "ruff.toml")):
            return candidate
    return folder
