"""The workflow module: imported once, every mistake refused with one line naming the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import registry
from engine.errors import ConfigError, UnknownWorkflow


def load(tmp_path: Path, module: str, yaml: str = "workflow:\n  FLOW: flow\n"):
    (tmp_path / "ploy.py").write_text(module)
    (tmp_path / "ploy.yaml").write_text(yaml)
    return registry._definitions(registry.load_config(tmp_path / "ploy.yaml"))


def test_definitions_and_accepted_arguments(tmp_path):
    definitions = load(
        tmp_path,
        "def flow(*, input, step): pass\n"
        "def everything(**kwargs): pass\n"
        "def hook(error, *, env): pass\n"
        "workflows = {'flow': {'handler': flow, 'on_error': hook}, 'everything': everything}\n",
    )
    assert definitions["flow"].arguments == {"input", "step"}
    assert definitions["flow"].on_error_arguments == {"env"}
    assert definitions["everything"].arguments == {"input", "env", "step", "execution_id"}
    assert definitions["everything"].on_error is None


def test_module_may_import_its_neighbours(tmp_path):
    (tmp_path / "helpers_for_flow.py").write_text("VALUE = 7\n")
    definitions = load(
        tmp_path,
        "from helpers_for_flow import VALUE\n"
        "def flow(): return VALUE\n"
        "workflows = {'flow': flow}\n",
    )
    assert definitions["flow"].handler() == 7


BAD_MODULES = [
    (
        "workflows = {}\n",
        "workflow.FLOW: workflow 'flow' is not defined in ploy.py (it defines: "
        "none): add it to `workflows` there or fix the name",
    ),
    ("def f(): pass\nworkflows = {'flw': f}\n", "did you mean 'flw'?"),
    ("x = 1 +\n", "importing it failed at line 1: SyntaxError"),
    (
        "import os\n\nraise RuntimeError('boom')\n",
        "importing it failed at line 3: RuntimeError: boom",
    ),
    ("flows = {}\n", "it must define a dict `workflows"),
    ("workflows = {'flow': 3}\n", "workflows['flow'] must be a dict with a 'handler', got int"),
    ("workflows = {'flow': {'handler': 'f'}}\n", "workflows['flow']['handler'] must be a function"),
    (
        "def f(): pass\nworkflows = {'flow': {'handler': f, 'onError': f}}\n",
        "unknown key 'onError' (did you mean 'on_error'?)",
    ),
    (
        "def f(): pass\nworkflows = {'flow': {'handler': f, 'on_error': 1}}\n",
        "['on_error'] must be a function, got 1",
    ),
    ("def f(): pass\nworkflows = {'': f, 'flow': f}\n", "workflow names must be non-empty strings"),
    (
        "import sys\nsys.exit(3)\n",
        "importing it called sys.exit(3) at line 2: a workflow module must not exit; remove the "
        "call or guard it with `if __name__ == '__main__':`",
    ),
    ("raise SystemExit\n", "importing it called sys.exit(None) at line 1"),
    (
        "workflows = {'flow': {'handler': dict}}\n",
        "workflows['flow']['handler'] must be a function, got the class 'dict': use a def",
    ),
    ("workflows = {'flow': dict}\n", "['handler'] must be a function, got the class 'dict'"),
    (
        "def f(): pass\nworkflows = {'flow': {'handler': f, 'on_error': ValueError}}\n",
        "workflows['flow']['on_error'] must be a function, got the class 'ValueError'",
    ),
    (
        "workflows = {'flow': {'handler': max}}\n",
        "['handler']: the signature of <built-in function max> cannot be read",
    ),
    ("raise ValueError('many\\nlines ' * 1000)\n", "ValueError: many lines many lines"),
    ("def f(): pass\nworkflows = {'a\\nb': f}\n", "(it defines: 'a\\nb')"),
    ("workflows = {'flow': {'handler': 'x' * 10000}}\n", "must be a function, got 'xxxx"),
]


@pytest.mark.parametrize(("module", "message"), BAD_MODULES)
def test_bad_module_is_refused_with_one_line(tmp_path, module, message):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, module)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert len(str(caught.value)) < 500


def test_the_process_registry_knows_the_test_workflows():
    current = registry.current()
    assert current.definition("data_processing").on_error is not None
    with pytest.raises(UnknownWorkflow):
        current.definition("ghost")


def manage_py_check(tmp_path: Path, yaml: str, module: str) -> subprocess.CompletedProcess:
    (tmp_path / "ploy.yaml").write_text(yaml)
    (tmp_path / "ploy.py").write_text(module)
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(
        [sys.executable, str(root / "manage.py"), "check"],
        env={
            **os.environ,
            "PLOY_CONFIG": str(tmp_path / "ploy.yaml"),
            "DJANGO_SETTINGS_MODULE": "ployweb.settings",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("yaml", "module", "line"),
    [
        (
            "workflow:\n  ORDERS:\n    name: o\n    retries: -1\n",
            "workflows = {}\n",
            "ploy.yaml: workflow.ORDERS.retries must be a whole number >= 0, got -1",
        ),
        (
            "workflow:\n  ORDERS:\n    name: o\n    retries: 99999999999999999999\n",
            "workflows = {}\n",
            "ploy.yaml: workflow.ORDERS.retries must be at most 1000, got 99999999999999999999: "
            "use a smaller number",
        ),
        (
            "workflow:\n  FLOW: flow\n",
            "import sys\nsys.exit(3)\n",
            "ploy.py: importing it called sys.exit(3) at line 2: a workflow module must not exit; "
            "remove the call or guard it with `if __name__ == '__main__':`",
        ),
        (
            "workflow:\n  FLOW: flow\n",
            "workflows = {'flow': {'handler': dict}}\n",
            "ploy.py: workflows['flow']['handler'] must be a function, got the class 'dict': "
            "use a def",
        ),
    ],
    ids=["negative-retries", "huge-retries", "sys-exit", "class-handler"],
)
def test_manage_py_prints_one_line_for_a_broken_config(tmp_path, yaml, module, line):
    result = manage_py_check(tmp_path, yaml, module)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"ployweb: {tmp_path}/{line}"]


def test_async_workflow_functions_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"workflows\['flow'\]\['handler'\] is async: ployweb"):
        load(tmp_path, "async def flow(): pass\nworkflows = {'flow': flow}\n")
