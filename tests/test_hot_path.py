"""Guards of the hot path that cannot be noisy: the statements and transactions of a new step,
of a replay of k steps (the same for 10 and 1,000) and of a trigger, counted, not timed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from engine import runtime
from engine.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def counting() -> Iterator[dict[str, int]]:
    """Every statement sent to the database, by kind; each BEGIN is one transaction (SQLite's
    BEGIN IMMEDIATE goes through the cursor; the COMMIT that ends it does not)."""
    counts = {"statements": 0, "begin": 0, "writes": 0}

    def count(execute, sql, params, many, context):
        counts["statements"] += 1
        words = sql.lstrip().split(None, 1)
        verb = words[0].upper() if words else ""
        counts["begin"] += verb == "BEGIN"
        counts["writes"] += verb in {"INSERT", "UPDATE", "DELETE"}
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        yield counts


def run_chain(steps: int, **extra: object) -> tuple[str, dict[str, int]]:
    execution_id = runtime.trigger("CHAIN", {"steps": steps, **extra}).execution_id
    with counting() as counts:
        runtime.run_execution(execution_id)
    return execution_id, counts


def test_each_new_step_costs_two_transactions_and_three_writes():
    _, ten = run_chain(10)
    _, twenty = run_chain(20)
    per_step = {kind: (twenty[kind] - ten[kind]) / 10 for kind in ten}
    # "attempt running" (fence, step, attempt), then "completed" (fence, attempt, step)
    assert per_step == {"statements": 8, "begin": 2, "writes": 4}


def test_a_run_costs_a_constant_number_of_statements_beyond_its_steps():
    _, ten = run_chain(10)
    # the claim (update, read back), and per step 8: what is left is the end of the run
    fixed = ten["statements"] - 8 * (10 + 1)
    assert fixed == 3, ten


@pytest.mark.parametrize("steps", [10, 1000])
def test_a_replay_costs_the_same_whatever_the_number_of_completed_steps(steps):
    execution_id, _ = run_chain(steps, sleep_ms=1000)
    with counting() as counts:
        runtime.run_execution(execution_id, now=timezone.now() + timedelta(seconds=2))
    assert Execution.objects.get(id=execution_id).status == "completed"
    # claim (2), steps (1), sleep completed (3), the last step (8), the end (1)
    assert counts == {"statements": 15, "begin": 3, "writes": 7}


def test_a_trigger_costs_one_insert_that_commits_by_itself():
    with counting() as counts:
        runtime.trigger("CHAIN", {"steps": 1})
    assert counts == {"statements": 1, "begin": 0, "writes": 1}  # and the queue's own write


def test_a_trigger_inside_a_transaction_takes_a_savepoint_and_one_insert():
    with transaction.atomic(), counting() as counts:
        runtime.trigger("CHAIN", {"steps": 1})
    # SAVEPOINT, INSERT, RELEASE: a refused idempotency key leaves the caller's transaction usable
    assert counts == {"statements": 3, "begin": 0, "writes": 1}


def post(client, body: bytes, headers: dict[str, str]):
    return client.post("/api/workflows/CHAIN/trigger", body, "application/json", headers=headers)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, {"statements": 1, "begin": 0, "writes": 1}),
        # The key is looked up first; a new key costs that read and the same insert.
        ({"Idempotency-Key": "order-1"}, {"statements": 2, "begin": 0, "writes": 1}),
    ],
)
def test_an_http_trigger_costs_one_insert_and_no_transaction(client, headers, expected):
    with counting() as counts:
        response = post(client, b'{"steps": 1}', headers)
    assert response.status_code == 202, response.content
    assert counts == expected


def test_an_http_trigger_with_a_known_key_writes_nothing(client):
    first = post(client, b"1", {"Idempotency-Key": "order-2"})
    with counting() as counts:
        again = post(client, b"2", {"Idempotency-Key": "order-2"})
    assert again.json() == first.json()
    assert counts == {"statements": 1, "begin": 0, "writes": 0}
