"""The lean record reader of `.run()` and `get_execution` returns exactly what the model-based
reader does, for executions with retries, sleeps and failures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from engine import queries, runtime
from engine.records import ExecutionRecord, load_record

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    ("binding", "input"),
    [
        ("DATA_FLOW", {"action": "double", "value": 2, "sleep_ms": 1000}),
        ("FLAKY", {"failures": 2}),
        ("FAILING", None),
        ("SLEEPER", {"ms": 60_000}),
    ],
)
def test_load_record_matches_the_model_reader(binding, input):
    execution_id = runtime.trigger(binding, input).execution_id
    for seconds in (0, 2, 4, 8):  # through the sleeps and retry back-offs
        runtime.run_execution(execution_id, now=timezone.now() + timedelta(seconds=seconds))
    expected = ExecutionRecord.of(queries.get_execution(execution_id))
    assert expected.steps, "the fixture reached some steps"
    assert load_record(execution_id) == expected


def test_load_record_checks_the_workflow():
    from engine.errors import ExecutionNotFound

    execution_id = runtime.trigger("SLEEPER", {"ms": 1}).execution_id
    with pytest.raises(ExecutionNotFound):
        load_record(execution_id, workflow="flaky")
    with pytest.raises(ExecutionNotFound):
        load_record("not-an-id")
