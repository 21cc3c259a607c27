"""`manage.py ploy_types`: ploy_env.py typed from the handlers' annotations, accepted by ruff,
checked by real mypy runs on good and bad code, and the runtime unchanged by it."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine import get_ploy_context, registry, runtime, typegen
from engine.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "workflows" / "typed"
BIN = Path(sys.executable).parent

EXPECTED = '''\
"""The bindings of ploy.yaml, typed: written by `python manage.py ploy_types`; do not edit."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

    from engine.bindings import WorkflowBinding
    from engine.database import Database

    from flows import OrderInput, OrderOutput


class PloyEnv:
    """`get_ploy_context(PloyEnv).env`: one attribute per binding of ploy.yaml."""

    ORDERS: WorkflowBinding[OrderInput, OrderOutput]
    UNTYPED: WorkflowBinding[Any, Any]
    COUNT: WorkflowBinding[list[OrderInput] | None, dict[str, int]]
    DB: Database
'''

# The project's ruff rules, in the project's own folder: its modules are first-party there.
RUFF_CONFIG = """\
[tool.ruff]
line-length = 100
target-version = "py311"

[tool.ruff.lint]
select = ["E", "F", "W", "I", "UP", "B", "SIM"]
"""

LONG_NAMES = '''\
"""Type names long enough that the attribute and the import need more than one line."""

from typing import TypedDict


class AVeryLongInputTypeNameForTheLineLength(TypedDict):
    value: int


class AVeryLongOutputTypeNameForTheLineLength(TypedDict):
    value: int


def handler(
    *, input: AVeryLongInputTypeNameForTheLineLength
) -> AVeryLongOutputTypeNameForTheLineLength:
    return {"value": input["value"]}


workflows = {"long_flow": handler}
'''

GOOD_USE = '''\
"""Typed use of the bindings: mypy --strict accepts it and infers each type."""

from typing import assert_type

from engine import get_ploy_context
from engine.bindings import Env
from engine.database import Database
from flows import OrderInput, OrderOutput
from ploy_env import PloyEnv


def use() -> None:
    env = get_ploy_context(PloyEnv).env
    assert_type(env, PloyEnv)
    order: OrderInput = {"sku": "a-1", "quantity": 2}
    execution_id = env.ORDERS.trigger(order, idempotency_key="order-1").execution_id
    execution = env.ORDERS.run({"sku": "a-2", "quantity": 1})
    assert_type(execution.output, OrderOutput | None)
    if execution.output is not None:
        assert_type(execution.output["total"], float)
    assert_type(env.ORDERS.get_execution(execution_id).input, OrderInput)
    assert_type(env.ORDERS.send_event(execution_id, "approval", {"ok": True}), str)
    env.UNTYPED.trigger(["anything", 1])
    env.COUNT.trigger(None)
    assert_type(env.DB, Database)
    env.DB.prepare("SELECT ?").bind(1).first()
    untyped = get_ploy_context().env
    assert_type(untyped, Env)
    untyped.ANY_BINDING.trigger({"x": 1})
'''

# Each `# expect:` names (part of) the error mypy must report on that line, and no other line
# may have one.
BAD_USE = """\
from engine import get_ploy_context
from ploy_env import PloyEnv

env = get_ploy_context(PloyEnv).env
env.ORDERS.trigger({"sku": "a", "quantity": 2, "colour": "red"})  # expect: Extra key "colour"
env.ORDERS.trigger({"sku": "a"})  # expect: Missing key "quantity" for TypedDict "OrderInput"
env.ORDERS.run({"sku": "a", "quantity": "2"})  # expect: TypedDict item "quantity" has type "int"
env.GHOST.trigger({})  # expect: "PloyEnv" has no attribute "GHOST"
env.ORDERS.send_event("id")  # expect: Missing positional argument "event_type"
env.ORDERS.send_event("id", 42)  # expect: Argument 2 to "send_event" of "WorkflowBinding"
env.ORDERS.get_execution("id").output["total"]  # expect: "OrderOutput | None" is not indexable
env.DB.prepare(42)  # expect: Argument 1 to "prepare" of "Database" has incompatible type "int"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The typed fixture module and its ploy.yaml in a folder of their own, as a project."""
    for name in ("flows.py", "ploy.yaml"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    (tmp_path / "pyproject.toml").write_text(RUFF_CONFIG)
    return tmp_path


def manage(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ployweb.settings",
        "PLOY_CONFIG": str(project / "ploy.yaml"),
        "PLOY_DATA_DIR": str(project / "data"),
    }
    return subprocess.run(
        [sys.executable, "manage.py", "ploy_types", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_bindings_are_typed_from_the_handlers_annotations(project: Path) -> None:
    path = typegen.write(registry.read(project / "ploy.yaml"))
    assert path == project / "ploy_env.py"
    assert path.read_text() == EXPECTED
    assert typegen.render(registry.read(project / "ploy.yaml")) == EXPECTED  # deterministic


def test_a_long_line_is_split_as_ruff_formats_it(tmp_path: Path) -> None:
    (tmp_path / "long_names.py").write_text(LONG_NAMES)
    (tmp_path / "ploy.yaml").write_text("main: long_names.py\nworkflow:\n  LONG_FLOW: long_flow\n")
    (tmp_path / "pyproject.toml").write_text(RUFF_CONFIG)
    text = typegen.render(registry.read(tmp_path / "ploy.yaml"))
    assert (
        "    LONG_FLOW: WorkflowBinding[\n        AVeryLongInputTypeNameForTheLineLength,\n" in text
    )
    assert "    from long_names import (\n" in text
    assert max(len(line) for line in text.splitlines()) <= 100


@pytest.mark.parametrize("module", ["flows", "long_names"])
def test_ruff_accepts_the_written_file(project: Path, module: str) -> None:
    if module == "long_names":
        (project / "long_names.py").write_text(LONG_NAMES)
        (project / "ploy.yaml").write_text("main: long_names.py\nworkflow:\n  LONG: long_flow\n")
    typegen.write(registry.read(project / "ploy.yaml"))
    for command in (["check"], ["format", "--check", "--diff"]):
        result = subprocess.run(
            [BIN / "ruff", *command, "--no-cache", "ploy_env.py"],
            cwd=project,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_examples_ploy_env_is_up_to_date() -> None:
    assert typegen.is_up_to_date(registry.read(ROOT / "ploy.yaml")), (
        "run `python manage.py ploy_types` and commit ploy_env.py"
    )


def test_check_fails_while_the_file_is_missing_or_stale(project: Path) -> None:
    missing = manage(project, "--check")
    assert missing.returncode == 1
    [line] = missing.stderr.strip().splitlines()
    assert str(project / "ploy_env.py") in line and "run `python manage.py ploy_types`" in line
    assert not (project / "ploy_env.py").exists()

    written = manage(project)
    assert written.returncode == 0, written.stderr
    assert (project / "ploy_env.py").read_text() == EXPECTED
    up_to_date = manage(project, "--check")
    assert up_to_date.returncode == 0, up_to_date.stderr

    flows = project / "flows.py"
    flows.write_text(flows.read_text().replace("-> OrderOutput:", "-> dict[str, object]:"))
    stale = manage(project, "--check")
    assert stale.returncode == 1
    assert "is out of date" in stale.stderr
    assert (project / "ploy_env.py").read_text() == EXPECTED  # --check writes nothing


def test_an_annotation_that_does_not_resolve_is_refused_with_the_fix(project: Path) -> None:
    flows = project / "flows.py"
    flows.write_text(flows.read_text().replace("input: OrderInput,", "input: Missing,"))
    with pytest.raises(ConfigError, match=r"the input annotation 'Missing' cannot be resolved"):
        typegen.render(registry.read(project / "ploy.yaml"))


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def mypy(project: Path, cache: Path, *files: str) -> subprocess.CompletedProcess[str]:
    """mypy --strict on the project's files, with this checkout's engine on its path."""
    packages = project / "packages"
    packages.mkdir(exist_ok=True)
    for name in ("engine", "ployweb", "dashboard"):
        (packages / name).symlink_to(ROOT / name)
    (project / "mypy.ini").write_text("[mypy]\nstrict = True\nfollow_imports = silent\n")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", str(cache)]
        + ["--no-error-summary", "--hide-error-context", *files],
        cwd=project,
        env={**os.environ, "MYPYPATH": str(packages)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_mypy_accepts_typed_use_and_infers_the_bindings_types(
    project: Path, mypy_cache: Path
) -> None:
    typegen.write(registry.read(project / "ploy.yaml"))
    (project / "good_use.py").write_text(GOOD_USE)
    result = mypy(project, mypy_cache, "good_use.py", "ploy_env.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_reports_a_wrong_input_an_unknown_binding_and_wrong_event_arguments(
    project: Path, mypy_cache: Path
) -> None:
    typegen.write(registry.read(project / "ploy.yaml"))
    (project / "bad_use.py").write_text(BAD_USE)
    result = mypy(project, mypy_cache, "bad_use.py")
    assert result.returncode == 1, result.stdout + result.stderr
    errors: dict[int, str] = {}
    for match in re.finditer(r"^bad_use\.py:(\d+): error: (.*)$", result.stdout, re.M):
        errors[int(match[1])] = errors.get(int(match[1]), "") + match[2]
    expected = {
        number: line.partition("# expect: ")[2]
        for number, line in enumerate(BAD_USE.splitlines(), start=1)
        if "# expect: " in line
    }
    assert sorted(errors) == sorted(expected), result.stdout
    for number, message in expected.items():
        assert message in errors[number], (number, errors[number])


def load_env_class(path: Path) -> type[object]:
    spec = importlib.util.spec_from_file_location("ploy_env_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports only typing: every other import is for checkers
    env_class: type[object] = module.PloyEnv
    return env_class


@pytest.mark.django_db(transaction=True)
def test_a_workflow_triggered_through_the_typed_env_runs(project: Path) -> None:
    try:
        path = typegen.write(registry.load(project / "ploy.yaml"))
        env = get_ploy_context(load_env_class(path)).env
        execution_id = env.ORDERS.trigger({"sku": "a-1", "quantity": 4}).execution_id
        runtime.run_execution(execution_id)
        execution = env.ORDERS.get_execution(execution_id)
        assert execution.status == "completed", execution.error
        assert execution.output == {"sku": "a-1", "total": 10.0}
    finally:
        registry.load()


def test_a_stale_env_class_is_refused_naming_the_fix(project: Path) -> None:
    path = typegen.write(registry.read(project / "ploy.yaml"))  # not the registry in use
    with pytest.raises(ConfigError, match=r"\(COUNT, ORDERS, UNTYPED\): run `python manage.py"):
        get_ploy_context(load_env_class(path))
