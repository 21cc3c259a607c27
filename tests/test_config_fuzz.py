"""ploy.yaml loading, property-based: whatever the document, load_config returns a config or
raises one ConfigError line, quickly; never another exception, a traceback or a hang."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import PloyConfig, load_config
from engine.errors import ConfigError

FOLDER = Path(tempfile.mkdtemp(prefix="ploy-fuzz-"))
(FOLDER / "ploy.py").write_text("workflows = {}\n")
PATH = FOLDER / "ploy.yaml"

FUZZ = settings(
    max_examples=300,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Pieces of YAML that reach the loader's corners: anchors, aliases, merges, tags, flow and
# block collections, odd scalars, and the keys of a real ploy.yaml.
# fmt: off
TOKENS = [
    "main: ", "workflow:", "db:", "kind: x", "queue:", "name: ", "retries: ", "\n", "\n  ",
    "\n    ", "- ", "? ", ": ", ", ", "[", "]", "{", "}", "&a ", "&b ", "*a", "*b", "<<: ",
    "!!int ", "!!float ", "!!bool ", "!!str ", "!!binary ", "!!timestamp ", "!!set ", "!!omap ",
    "!!pairs ", "!!python/object:os.system ", "!custom ", "'", '"', "|", ">", "#", "~", "null",
    "true", "-1", "0", "3", "1000", "1001", "99999999999999999999", "9" * 5000, "1e999",
    ".inf", ".nan", "0x", "0b", "1:60", "2001-13-45", "ploy.py", "missing.py", "DATA_FLOW",
    "data_processing", "default", "../x", '"\\0"', '"\\ud800"', '"a\\nb"', "\t", "%YAML 1.1\n",
    "---\n", "...\n", "é", "\U0001f600", "\x00", "\x85", "\ufeff",
]
# fmt: on
TEXT = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join) | st.text(max_size=200)

KEYS = st.sampled_from(
    ["main", "workflow", "db", "name", "retries", "kind", "cron", "A", "DATA_FLOW", "<<"]
) | st.text(max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["ploy.py", "data_processing", "default", "x.txt", "a\x00b.py"])
    | st.binary(max_size=8)
    | st.dates()
)


def _shared(value: object) -> list[object]:
    """The same object twice: yaml.dump writes it once with an anchor, then an alias."""
    return [value, value]


VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(KEYS, children, max_size=4)
        | children.map(_shared)
    ),
    max_leaves=30,
)
DOCUMENTS = st.dictionaries(KEYS, VALUES, max_size=5) | VALUES


def check_loads_or_refuses_in_one_line(text: str | bytes) -> None:
    if isinstance(text, bytes):
        PATH.write_bytes(text)
    else:
        PATH.write_text(text, encoding="utf-8")
    try:
        config = load_config(PATH)
    except ConfigError as error:
        message = str(error)
        assert message.startswith(f"{PATH}: "), message
        assert "\n" not in message and "\r" not in message, message
        assert len(message) < 1000, message
    else:
        assert isinstance(config, PloyConfig)


@FUZZ
@given(TEXT)
def test_any_text_loads_or_is_refused_in_one_line(text: str) -> None:
    check_loads_or_refuses_in_one_line(text)


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_load_or_are_refused_in_one_line(data: bytes) -> None:
    check_loads_or_refuses_in_one_line(data)


@FUZZ
@given(DOCUMENTS)
def test_any_dumped_structure_loads_or_is_refused_in_one_line(document: object) -> None:
    check_loads_or_refuses_in_one_line(yaml.dump(document, allow_unicode=True))


@FUZZ
@given(
    main=VALUES,
    binding=KEYS,
    value=VALUES,
    name=VALUES,
    retries=VALUES,
    database=VALUES,
)
def test_any_values_in_a_real_layout_load_or_are_refused_in_one_line(
    main: object, binding: object, value: object, name: object, retries: object, database: object
) -> None:
    documents = [
        {"main": main},
        {"main": "ploy.py", "workflow": {binding: value}},
        {"workflow": {"A": {"name": name, "retries": retries}}},
        {"db": {binding: database}},
    ]
    for document in documents:
        check_loads_or_refuses_in_one_line(yaml.dump(document, allow_unicode=True))


CRON_TEXT = st.lists(
    st.sampled_from(["*", "*/5", "0", "59", "60", "1-5", "5-1", ",", "/", "-", "L", "W", "#", "?"])
    | st.sampled_from(["MON", "jan", "@daily", "H", "99999999999999999999", " ", "\t", "é"]),
    max_size=8,
).map(" ".join)


@FUZZ
@given(name=KEYS, cron=CRON_TEXT | VALUES, every=VALUES, workflow=VALUES, input=VALUES)
def test_any_cron_section_loads_or_is_refused_in_one_line(
    name: object, cron: object, every: object, workflow: object, input: object
) -> None:
    documents = [
        {"cron": {name: cron}},
        {"workflow": {"A": "a"}, "cron": {name: {"schedule": cron, "workflow": "A"}}},
        {"workflow": {"A": "a"}, "cron": {"N": {"every": every, "workflow": workflow}}},
        {"workflow": {"A": "a"}, "cron": {"N": {"every": "1s", "workflow": "A", "input": input}}},
    ]
    for document in documents:
        check_loads_or_refuses_in_one_line(yaml.dump(document, allow_unicode=True))
