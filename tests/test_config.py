"""ploy.yaml loading: the good forms, and one clear line for every mistake."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config import (
    DEFAULT_RETRIES,
    MAX_RETRIES,
    BindingConfig,
    DatabaseConfig,
    check_retries,
    load_config,
)
from engine.errors import ConfigError, UnknownWorkflow
from engine.schedule_config import ScheduleConfig

ROOT = Path(__file__).resolve().parent.parent

MODULE = "workflows = {}\n"


def write(tmp_path: Path, text: str, module: str | None = MODULE) -> Path:
    if module is not None:
        (tmp_path / "ploy.py").write_text(module)
    path = tmp_path / "ploy.yaml"
    path.write_text(text)
    return path


def test_short_and_expanded_forms(tmp_path):
    config = load_config(
        write(
            tmp_path,
            "workflow:\n  DATA_FLOW: data_processing\n"
            "  ORDERS:\n    name: order_flow\n    retries: 5\n"
            "  QUIET:\n    name: quiet\n"
            "  BOUNDED:\n    name: bounded\n    timeout: 1h\n"
            "  QUICK:\n    name: quick\n    timeout: 250ms\n"
            "  PAIRS:\n    name: pairs\n    concurrency: 2\n"
            "  PER_CUSTOMER:\n    name: orders\n    concurrency: 1\n"
            "    concurrency_key: customer.id\n"
            "db:\n  DB: default\n",
        )
    )
    assert config.workflows == (
        BindingConfig(binding="DATA_FLOW", name="data_processing", retries=DEFAULT_RETRIES),
        BindingConfig(binding="ORDERS", name="order_flow", retries=5),
        BindingConfig(binding="QUIET", name="quiet", retries=3),
        BindingConfig(binding="BOUNDED", name="bounded", timeout=3600.0),
        BindingConfig(binding="QUICK", name="quick", timeout=0.25),
        BindingConfig(binding="PAIRS", name="pairs", concurrency=2),
        BindingConfig(
            binding="PER_CUSTOMER", name="orders", concurrency=1, concurrency_key="customer.id"
        ),
    )
    assert config.databases == (DatabaseConfig(binding="DB", name="default"),)
    assert config.main == tmp_path / "ploy.py"
    assert config.warnings == ()


def test_binding_lookup_by_binding_or_workflow_name(tmp_path):
    config = load_config(
        write(tmp_path, "workflow:\n  A: shared\n  B:\n    name: shared\n    retries: 0\n")
    )
    assert config.binding("B").retries == 0
    assert config.binding("shared").binding == "A"  # the first binding's settings apply
    with pytest.raises(UnknownWorkflow, match="unknown workflow 'ghost'"):
        config.binding("ghost")


def test_main_is_relative_to_the_file(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "flows.py").write_text(MODULE)
    config = load_config(write(tmp_path, "main: src/flows.py\n", module=None))
    assert config.main == tmp_path / "src" / "flows.py"


def test_empty_file_loads_with_no_bindings(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config.workflows == () and config.databases == ()


def test_ploy_deployment_keys_are_accepted_with_one_warning_each(tmp_path):
    config = load_config(
        write(tmp_path, "kind: dynamic\nbuild: pnpm build\nout: dist\nworkflow:\n  A: a\n")
    )
    assert len(config.warnings) == 3
    assert "'kind' is a Ploy deployment key with no meaning here; ignored" in config.warnings[0]
    assert config.workflows[0].name == "a"


BAD_CONFIGS = [
    ("workflows:\n  A: a\n", "unknown key 'workflows' (did you mean 'workflow'?): rename"),
    ("colour: red\n", "unknown key 'colour' (allowed keys: main, workflow, db, cron)"),
    ("queue:\n  Q: q\n", "'queue' bindings are not provided by ployweb yet: remove the 'queue'"),
    ("timer:\n  T: t\n", "'timer' bindings are not provided by ployweb yet"),
    ("workflow: [a, b]\n", "workflow must be a mapping of BINDING: workflow_name, got list"),
    ("workflow:\n  A: 12\n", "workflow.A must be a workflow name or a mapping"),
    ("workflow:\n  A: ''\n", "workflow.A must be a workflow name (a non-empty string), got ''"),
    ("workflow:\n  A:\n    retries: 2\n", "workflow.A.name is missing: add the workflow's name"),
    (
        "workflow:\n  ORDERS:\n    name: o\n    retries: -1\n",
        "workflow.ORDERS.retries must be a whole number >= 0, got -1",
    ),
    ("workflow:\n  A:\n    name: a\n    retries: many\n", "retries must be a whole number >= 0"),
    ("workflow:\n  A:\n    name: a\n    retries: 1.5\n", "got 1.5"),
    ("workflow:\n  A:\n    name: a\n    retries: true\n", "got True"),
    (
        "workflow:\n  A:\n    name: a\n    retries: 99999999999999999999\n",
        "workflow.A.retries must be at most 1000, got 99999999999999999999: use a smaller number",
    ),
    ("workflow:\n  A:\n    name: a\n    retries: 3000000000\n", "must be at most 1000"),
    ("workflow:\n  A:\n    name: a\n    retries: 1001\n", "must be at most 1000, got 1001"),
    ("workflow:\n  A:\n    name: a\n    timeout: 0\n", "workflow.A.timeout must be a duration"),
    ("workflow:\n  A:\n    name: a\n    timeout: soon\n", "got 'soon'"),
    ("workflow:\n  A:\n    name: a\n    timeout: 400d\n", "at most 365d, got '400d'"),
    (
        "workflow:\n  A:\n    name: a\n    concurrency: 0\n",
        "workflow.A.concurrency must be a whole number from 1 to 10000, got 0",
    ),
    ("workflow:\n  A:\n    name: a\n    concurrency: -2\n", "from 1 to 10000, got -2"),
    ("workflow:\n  A:\n    name: a\n    concurrency: 2.5\n", "from 1 to 10000, got 2.5"),
    ("workflow:\n  A:\n    name: a\n    concurrency: true\n", "from 1 to 10000, got True"),
    ("workflow:\n  A:\n    name: a\n    concurrency: '3'\n", "from 1 to 10000, got '3'"),
    ("workflow:\n  A:\n    name: a\n    concurrency: 10001\n", "from 1 to 10000, got 10001"),
    (
        "workflow:\n  A:\n    name: a\n    concurrency_key: customer\n",
        "workflow.A.concurrency_key needs workflow.A.concurrency: add the limit, or remove the key",
    ),
    (
        "workflow:\n  A:\n    name: a\n    concurrency: 2\n    concurrency_key: ''\n",
        "workflow.A.concurrency_key must be a dotted path into the input such as customer or "
        "customer.id, got ''",
    ),
    (
        "workflow:\n  A:\n    name: a\n    concurrency: 2\n    concurrency_key: a..b\n",
        "concurrency_key must be a dotted path into the input",
    ),
    (
        "workflow:\n  A:\n    name: a\n    concurrency: 2\n    concurrency_key: [a]\n",
        "concurrency_key must be a dotted path into the input such as customer or customer.id, "
        "got ['a']",
    ),
    (
        "workflow:\n  A:\n    name: a\n    concurrency: 2\n    concurrency_key: 'a b'\n",
        "got 'a b'",
    ),
    (
        "workflow:\n  A:\n    name: a\n    concurrenc: 2\n",
        "unknown key 'workflow.A.concurrenc' (did you mean 'concurrency'?)",
    ),
    (
        "workflow:\n  A:\n    name: a\n    retries: " + "9" * 5000 + "\n",
        "invalid YAML at line 4, column 14: '99999",
    ),
    (
        "workflow:\n  A:\n    name: a\n    retry: 2\n",
        "unknown key 'workflow.A.retry' (did you mean",
    ),
    ("workflow:\n  A:\n    name: [x]\n", "workflow.A.name must be a workflow name"),
    ("workflow:\n  my-flow: a\n", "workflow.my-flow: binding names must be identifiers"),
    ("workflow:\n  1: a\n", "workflow.1: binding names must be identifiers"),
    ("db: default\n", "db must be a mapping of BINDING: database_name, got str"),
    ("db:\n  DB: ../etc/passwd\n", "db.DB must be a database name of letters, digits"),
    ("db:\n  DB: 5\n", "db.DB must be a database name"),
    ("workflow:\n  X: a\ndb:\n  X: x\n", "db.X: the name X is already a workflow binding"),
    ("main: 42\n", "main must be the path of a Python file, got 42"),
    ("main: flows.txt\n", "main must name a .py file, got 'flows.txt'"),
    ("main: missing.py\n", "main: file 'missing.py' not found next to ploy.yaml"),
    ("- a\n- b\n", "the top level must be a mapping of keys (main, workflow, db), got list"),
    ("workflow:\n  A: a\n   B: b\n", "invalid YAML at line 3, column 5"),
    ("workflow: !!python/object:os.system x\n", "invalid YAML"),
    (
        "workflow:\n  A: a\n  B: b\n  A: c\n",
        "invalid YAML at line 4, column 3: the key 'A' is given twice (remove one)",
    ),
    ("workflow:\n  [a]: x\n", "invalid YAML"),
    ("workflow:\n  A: !!int x\n", "invalid YAML at line 2, column 6: 'x' is not a valid int"),
    ("workflow:\n  A: !!bool maybe\n", "'maybe' is not a valid bool: fix the value"),
    ("workflow:\n  A: !!timestamp soon\n", "'soon' is not a valid timestamp"),
    ("workflow: !!set ~\n", "invalid YAML"),
    ("workflow:\n  ? !!set {a}\n  : x\n", "invalid YAML"),
    ("main: &loop [*loop]\n", "an alias refers to a value that contains it: remove the loop"),
    ("[" * 5000 + "]" * 5000 + "\n", "invalid YAML: values nested too deeply"),
    # A trailing newline once passed the `$` of the name patterns.
    ('workflow:\n  "A\\n": a\n', "workflow.A\\n: binding names must be identifiers"),
    ('db:\n  DB: "default\\n"\n', "db.DB must be a database name of letters"),
    ("workflow:\n  " + "A" * 101 + ": a\n", "binding names must be identifiers of at most 100"),
    # The workflow name is stored with each execution: NUL, newlines or 201 characters cannot be.
    ('workflow:\n  A: "a\\0b"\n', "workflow.A must be a workflow name of at most 200 printable"),
    ('workflow:\n  A: "a\\nb"\n', "(no NUL, newline or tab), got 'a\\nb'"),
    ("workflow:\n  A: " + "a" * 201 + "\n", "at most 200 printable characters"),
    ('"x\\ny": 1\n', "unknown key 'x\\ny' (allowed keys: main, workflow, db, cron)"),
    ('main: "a\\0b.py"\n', "main: file 'a\\x00b.py' not found next to ploy.yaml"),
    ('main: "\\ud800.py"\n', "main: file '\\ud800.py' not found"),
    ("main: " + "x" * 5000 + ".py\n", "main: file 'xxxx"),
    ("main: [a, b]\n", "main must be the path of a Python file, got ['a', 'b']"),
    # cron: Ploy's form and the workflow form
    ("cron: [a]\n", 'cron must be a mapping of NAME: "<cron expression>" or NAME: {schedule'),
    ('cron:\n  TICK: "61 * * * *"\n', "cron.TICK is not a valid cron expression ("),
    ('cron:\n  TICK: "61 * * * *"\n', "got '61 * * * *': use 5 fields (minute hour"),
    ('cron:\n  TICK: "* * * *"\n', "cron.TICK must be a cron expression of 5 fields"),
    ('cron:\n  TICK: "0 * * * * *"\n', "got '0 * * * * *': quote it and give exactly 5"),
    ("cron:\n  TICK: 5\n", "cron.TICK must be a cron expression of 5 fields (minute hour"),
    ('cron:\n  TICK: "@daily"\n', "got '@daily'"),
    ('cron:\n  TICK: "0 0 31 2 *"\n', "cron.TICK: the cron expression '0 0 31 2 *' matches no"),
    ('cron:\n  TICK: "x y z w v"\n', "cron.TICK is not a valid cron expression"),
    ('cron:\n  my-tick: "* * * * *"\n', "cron.my-tick: schedule names must be identifiers"),
    (
        'workflow:\n  A: a\ncron:\n  A: "* * * * *"\n',
        "cron.A: the name A is already a workflow binding, and Ploy's form runs under its own",
    ),
    (
        "workflow:\n  A: a\ncron:\n  N:\n    workflow: A\n",
        "cron.N needs exactly one of schedule (a 5-field cron expression) or every",
    ),
    (
        "workflow:\n  A: a\ncron:\n  N:\n    workflow: A\n    every: 1s\n    schedule: '* * *'\n",
        "cron.N needs exactly one of schedule",
    ),
    (
        "workflow:\n  A: a\ncron:\n  N:\n    workflow: A\n    every: soon\n",
        "cron.N.every must be a duration: seconds > 0, or a number with ms, s, m, h or d",
    ),
    ("workflow:\n  A: a\ncron:\n  N:\n    workflow: A\n    every: 0\n", "got 0"),
    (
        "workflow:\n  A: a\ncron:\n  N:\n    workflow: A\n    schedule: '0 25 * * *'\n",
        "cron.N.schedule is not a valid cron expression",
    ),
    (
        "workflow:\n  A: a\ncron:\n  N:\n    every: 1m\n",
        "cron.N.workflow is missing: name the binding of workflow: it triggers",
    ),
    (
        "workflow:\n  ORDERS: a\ncron:\n  N:\n    every: 1m\n    workflow: ORDER\n",
        "cron.N.workflow must be a binding of workflow: (it has: ORDERS), got 'ORDER': did you "
        "mean 'ORDERS'? fix the name or add the binding",
    ),
    (
        "workflow:\n  A: a\ncron:\n  N:\n    every: 1m\n    workflow: A\n    when: now\n",
        "unknown key 'cron.N.when' (allowed keys: schedule, every, workflow, input): rename",
    ),
    (
        "workflow:\n  A: a\ncron:\n  N:\n    every: 1m\n    workflow: A\n    input: 2026-01-01\n",
        "cron.N.input must be JSON (Object of type date is not JSON serializable), got "
        "datetime.date(2026, 1, 1): quote dates",
    ),
]


def test_cron_ploy_form_and_workflow_form(tmp_path):
    config = load_config(
        write(
            tmp_path,
            "workflow:\n  DATA_FLOW: data_processing\n"
            "cron:\n"
            '  EVERY_MINUTE: "*/1  * * * *"\n'
            "  NIGHTLY_REPORT:\n"
            '    schedule: "0 3 * * *"\n'
            "    workflow: DATA_FLOW\n"
            "    input: {action: report, value: 0}\n"
            "  OFTEN:\n    every: 250ms\n    workflow: DATA_FLOW\n"
            "  HOURLY:\n    every: 3600\n    workflow: DATA_FLOW\n",
        )
    )
    assert config.schedules == (
        ScheduleConfig(name="EVERY_MINUTE", cron="*/1 * * * *"),
        ScheduleConfig(
            name="NIGHTLY_REPORT",
            cron="0 3 * * *",
            workflow="DATA_FLOW",
            input={"action": "report", "value": 0},
        ),
        ScheduleConfig(name="OFTEN", every=0.25, every_text="250ms", workflow="DATA_FLOW"),
        ScheduleConfig(name="HOURLY", every=3600.0, every_text="3600s", workflow="DATA_FLOW"),
    )
    assert [schedule.expression for schedule in config.schedules] == [
        "*/1 * * * *",
        "0 3 * * *",
        "every 250ms",
        "every 3600s",
    ]
    assert [schedule.calls_scheduled for schedule in config.schedules] == [
        True,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS)
def test_bad_config_is_refused_with_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert message in text
    assert text.startswith(f"{path}: ")
    assert "\n" not in text
    assert len(text) < 400, "a value quoted in a message is cut short"


def test_merge_keys_may_share_settings_and_override_them(tmp_path):
    config = load_config(
        write(
            tmp_path,
            "workflow:\n  A: &base {name: a, retries: 5}\n  B:\n    <<: *base\n    name: b\n",
        )
    )
    assert config.workflows[1] == BindingConfig(binding="B", name="b", retries=5)


@pytest.mark.parametrize(
    ("retries", "problem"),
    [
        (0, None),
        (MAX_RETRIES, None),
        (MAX_RETRIES + 1, "step.run('s', retries=...) must be at most 1000, got 1001"),
        (10**20, "must be at most 1000, got 100000000000000000000: use a smaller number"),
        (-1, "step.run('s', retries=...) must be a whole number >= 0, got -1"),
        (True, "must be a whole number >= 0, got True"),
        (2.0, "must be a whole number >= 0, got 2.0"),
        ("3", "got '3'"),
    ],
)
def test_check_retries_is_shared_by_ploy_yaml_and_step_run(retries, problem):
    if problem is None:
        assert check_retries("step.run('s', retries=...)", retries) == retries
    else:
        with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            check_retries("step.run('s', retries=...)", retries)


def laughs(levels: int = 9) -> str:
    """A flow sequence of "billion laughs": 9**levels strings from a few hundred bytes."""
    items = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        items.append(f"&l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "[" + ", ".join(items) + "]"


@pytest.mark.parametrize(
    "text",
    [
        f"main: {laughs()}\n",
        f"workflow:\n  A: {laughs()}\n",
        f"workflow:\n  A:\n    name: a\n    retries: {laughs()}\n",
        f"db:\n  DB: {laughs()}\n",
        f"workflow:\n  A:\n    name: {laughs()}\n",
        f"bomb: {laughs()}\n",
    ],
    ids=["main", "binding", "retries", "db", "name", "unknown-key"],
)
def test_an_alias_bomb_is_refused_at_once_wherever_it_is(tmp_path, text):
    """In a child process with 1 GiB of memory and 60 s: before the fix, formatting the value
    for the error message walked all 387 million strings."""
    path = write(tmp_path, text)
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from engine.config import load_config\n"
        "from engine.errors import ConfigError\n"
        "try:\n"
        "    load_config(sys.argv[1])\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - started < 10
    assert result.returncode == 0, result.stderr[-2000:]
    [line] = result.stdout.splitlines()
    assert line.startswith(f"{path}: ")
    assert len(line) < 400
    assert "its aliases expand to more than 10000 values (an alias bomb?)" in line


def test_missing_file_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="file not found: create it or set PLOY_CONFIG"):
        load_config(tmp_path / "nope.yaml")


def test_unreadable_encoding_is_refused(tmp_path):
    path = tmp_path / "ploy.yaml"
    path.write_bytes(b"workflow:\n  A: \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(path)
