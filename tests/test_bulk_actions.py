"""Bulk cancel and rerun over a filter: every matching execution, in batches of bounded
transactions, through engine.bulk and the HTTP API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection
from django.db.models import Count
from django.test import Client
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from engine import bulk, runtime
from engine.models import Attempt, Execution, Step

pytestmark = pytest.mark.django_db(transaction=True)

DATA = {"action": "double", "value": 21}


@pytest.fixture(autouse=True)
def _no_token(settings) -> None:
    settings.PLOY_API_TOKEN = None


def add_executions(
    count: int,
    *,
    status: str = "running",
    workflow: str = "data_processing",
    binding: str = "DATA_FLOW",
    with_steps: bool = False,
    **fields: object,
) -> list[Execution]:
    """`count` rows at once; running ones with a running step and attempt if `with_steps`."""
    now = timezone.now()
    finished = status != "running"
    executions = Execution.objects.bulk_create(
        [
            Execution(
                binding=binding,
                workflow=workflow,
                status=status,
                input={**DATA, "index": index},
                created_at=now,
                started_at=now,
                finished_at=now if finished else None,
                wake_at=None if finished else now,
                **fields,
            )
            for index in range(count)
        ],
        batch_size=500,
    )
    if with_steps:
        steps = Step.objects.bulk_create(
            [
                Step(execution=each, name="work", position=0, status="running", started_at=now)
                for each in executions
            ],
            batch_size=500,
        )
        Attempt.objects.bulk_create(
            [Attempt(step=step, number=1, status="running", started_at=now) for step in steps],
            batch_size=500,
        )
    return executions


@contextmanager
def counting() -> Iterator[dict[str, int]]:
    """Statements sent to the database, and transactions: each commit of an outermost block
    (nested blocks are savepoints), counted on the connection itself on every back end."""
    counts = {"statements": 0, "transactions": 0}

    def count(execute, sql, params, many, context):
        counts["statements"] += 1
        return execute(sql, params, many, context)

    commit = connection.commit

    def counted_commit() -> None:
        counts["transactions"] += 1
        commit()

    connection.commit = counted_commit
    try:
        with connection.execute_wrapper(count):
            yield counts
    finally:
        del connection.commit


def post(client: Client, path: str, body: object) -> object:
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post(path, data, content_type="application/json")


# --- cancel ----------------------------------------------------------------------------------


def test_bulk_cancel_cancels_2000_matching_executions_in_bounded_batches():
    matching = add_executions(2100, with_steps=True)
    other_workflow = add_executions(30, workflow="flaky", binding="FLAKY")
    ended = add_executions(40, status="completed")
    failing = add_executions(5, error={"type": "ValueError", "message": "x", "traceback": ""})
    with counting() as counts:
        cancelled = bulk.cancel_matching(Execution.objects.filter(workflow="data_processing"))
    assert cancelled == 2100
    statuses = dict(
        Execution.objects.filter(workflow="data_processing")
        .values_list("status")
        .annotate(n=Count("id"))
    )
    assert statuses == {"cancelled": 2100, "completed": 40, "running": 5}
    assert not Execution.objects.filter(id__in=[each.id for each in other_workflow]).exclude(
        status="running"
    )
    assert not Execution.objects.filter(id__in=[e.id for e in ended]).exclude(status="completed")
    assert Execution.objects.filter(id__in=[e.id for e in failing], status="running").count() == 5
    assert Step.objects.filter(execution__in=matching, status="cancelled").count() == 2100
    assert Attempt.objects.filter(error_type="Cancelled", status="failed").count() == 2100
    # 5 batches of at most 500: one transaction each, and a fixed number of statements each.
    assert counts["transactions"] == 5, counts
    assert counts["statements"] <= 5 * 12 + 2, counts


def test_bulk_cancel_takes_running_descendants_along():
    [parent] = add_executions(1)
    children = add_executions(3, workflow="double", binding="DOUBLE", parent=parent)
    assert bulk.cancel_matching(Execution.objects.filter(workflow="data_processing")) == 1
    assert set(
        Execution.objects.filter(id__in=[parent.id, *[c.id for c in children]]).values_list(
            "status", flat=True
        )
    ) == {"cancelled"}


def test_a_cancel_of_one_execution_still_answers_as_before():
    [execution] = add_executions(1)
    assert runtime.cancel_execution(execution.id).status == "cancelled"
    with pytest.raises(runtime.ExecutionAlreadyFinished, match=r"already ended \(cancelled\)"):
        runtime.cancel_execution(execution.id)


# --- rerun -----------------------------------------------------------------------------------


def test_bulk_rerun_starts_one_new_execution_per_match_in_bounded_batches():
    originals = add_executions(2050, status="failed")
    add_executions(20, status="completed", workflow="flaky", binding="FLAKY")
    add_executions(3, status="failed", workflow="retired", binding="RETIRED")
    HUEY.flush()
    with counting() as counts:
        started = bulk.rerun_matching(Execution.objects.filter(workflow="data_processing"))
    # The reruns match the filter too, but are newer than the first batch: never visited.
    assert started == 2050
    reruns = Execution.objects.filter(rerun_of__isnull=False)
    assert reruns.count() == 2050
    assert set(reruns.values_list("status", "workflow", "binding")) == {
        ("running", "data_processing", "DATA_FLOW")
    }
    inputs = {each.id: each.input for each in originals}
    assert all(inputs[r.rerun_of_id] == r.input for r in reruns.only("input", "rerun_of"))
    assert HUEY.pending_count() == 2050  # each queued once its batch committed
    assert counts["transactions"] == 5, counts  # 5 batches: one transaction each
    assert counts["statements"] <= 2050 * 3 + 5 * 6, counts  # an insert per rerun, in savepoints


def test_bulk_rerun_leaves_out_a_workflow_no_longer_bound():
    add_executions(3, status="failed", workflow="retired", binding="RETIRED")
    assert bulk.rerun_matching(Execution.objects.filter(workflow="retired")) == 0
    assert Execution.objects.count() == 3


# --- the HTTP API ----------------------------------------------------------------------------


def test_the_api_cancels_and_reruns_what_the_filter_matches(client: Client):
    add_executions(7)
    add_executions(4, status="failed")
    add_executions(2, status="failed", workflow="flaky", binding="FLAKY")
    response = post(client, "/api/executions/cancel", {"workflow": "data_processing"})
    assert (response.status_code, response.json()) == (200, {"count": 7})
    again = post(client, "/api/executions/cancel", {"workflow": "data_processing"})
    assert again.json() == {"count": 0}  # already-ended ones are skipped, not counted
    rerun = post(client, "/api/executions/rerun", {"status": "failed", "workflow": "flaky"})
    assert (rerun.status_code, rerun.json()) == (200, {"count": 2})
    everything = post(client, "/api/executions/rerun", {"all": True, "status": "failed"})
    assert everything.json() == {"count": 6}
    assert post(client, "/api/executions/cancel", {"all": True}).json() == {"count": 8}
    assert not Execution.objects.running().exists()


def test_the_api_filters_by_parent_id(client: Client):
    [parent] = add_executions(1, status="completed")
    add_executions(3, workflow="double", binding="DOUBLE", parent=parent)
    add_executions(2, workflow="double", binding="DOUBLE")
    response = post(client, "/api/executions/cancel", {"parentId": str(parent.id)})
    assert response.json() == {"count": 3}
    assert post(client, "/api/executions/cancel", {"parentId": "not-an-id"}).json() == {"count": 0}


def test_the_single_execution_routes_still_answer_beside_the_bulk_ones(client: Client):
    [execution] = add_executions(1)
    assert client.post(f"/api/executions/{execution.id}/cancel").status_code == 200
    assert client.post(f"/api/executions/{execution.id}/rerun").status_code == 202
    for action in ("cancel", "rerun"):  # the bulk paths, not an execution named "cancel"
        response = client.get(f"/api/executions/{action}")
        assert (response.status_code, response["Allow"]) == (405, "POST")


@pytest.mark.parametrize("action", ["cancel", "rerun"])
@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b"", 422, "send a JSON object filter"),
        (b"{", 400, "the request body is not valid JSON"),
        (b"[]", 422, "send a JSON object filter"),
        ({}, 422, 'the filter is empty: name a workflow, a status or a parentId, or send {"all"'),
        ({"all": False}, 422, "all must be true when given, got False"),
        ({"all": "yes"}, 422, "all must be true when given, got 'yes'"),
        ({"stauts": "failed"}, 422, "the filter has an unknown key 'stauts': use workflow, status"),
        ({"status": "done"}, 422, "status must be one of running, completed, failed, cancelled"),
        ({"status": ""}, 422, "status must be a non-empty string"),
        ({"workflow": ""}, 422, "workflow must be a non-empty string of at most 200 characters"),
        ({"workflow": None}, 422, "workflow must be a non-empty string"),
        ({"workflow": 5}, 422, "workflow must be a non-empty string"),
        ({"workflow": "a\x00b"}, 422, "workflow must be a non-empty string"),
        ({"workflow": "x" * 201}, 422, "workflow must be a non-empty string"),
        ({"parentId": 7}, 422, "parentId must be a non-empty string"),
    ],
)
def test_a_bad_filter_is_refused_in_one_line_and_changes_nothing(
    client: Client, action, body, status, detail
):
    add_executions(2)
    response = post(client, f"/api/executions/{action}", body)
    assert response.status_code == status
    assert detail in response.json()["detail"] and "\n" not in response.json()["detail"]
    assert Execution.objects.count() == 2 and Execution.objects.running().count() == 2


def test_bulk_actions_need_the_token_when_one_is_set(client: Client, settings):
    settings.PLOY_API_TOKEN = "s3cret"
    add_executions(2)
    refused = post(client, "/api/executions/cancel", {"all": True})
    assert refused.status_code == 401 and Execution.objects.running().count() == 2
    allowed = client.post(
        "/api/executions/cancel",
        json.dumps({"all": True}),
        content_type="application/json",
        headers={"Authorization": "Bearer s3cret"},
    )
    assert allowed.json() == {"count": 2}
