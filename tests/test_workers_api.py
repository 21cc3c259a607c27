"""`GET /api/workers`: every worker as it stands by the database's clock, with what it holds."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from engine import clock
from engine.models import Execution, Worker, WorkerStatus
from engine.workers import WorkerProcess, register
from tests.test_api import make_execution

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-token"


@pytest.fixture(autouse=True)
def _no_token(settings) -> None:
    """Open unless a test sets a token, whatever the environment running the tests says."""
    settings.PLOY_API_TOKEN = None


def make_worker(
    name: str,
    *,
    status: str = WorkerStatus.ALIVE,
    seen: float = 0.2,
    started: float = 60,
    threads: int = 2,
    pid: int = 4242,
) -> Worker:
    """A worker row last seen `seen` seconds ago and started `started` seconds ago, by the
    database's clock."""
    now = clock.now()
    return Worker.objects.create(
        id=f"host-{name}:{pid}:0123abcd",
        host=f"host-{name}",
        pid=pid,
        threads=threads,
        status=status,
        started_at=now - timedelta(seconds=started),
        last_seen_at=now - timedelta(seconds=seen),
        stopped_at=now - timedelta(seconds=seen) if status == WorkerStatus.DEAD else None,
    )


def held_by(worker: Worker, *, status: str = "running") -> str:
    execution = make_execution(status=status)
    Execution.objects.filter(id=execution.id).update(owner=worker.id)
    return str(execution.id)


def utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def listed(client: Client) -> list[dict]:
    response = client.get("/api/workers")
    assert response.status_code == 200, response.content
    return response.json()


def test_no_worker_lists_nothing(client: Client) -> None:
    assert listed(client) == []


def test_workers_newest_first_with_status_and_held_executions(client: Client) -> None:
    alive = make_worker("alive", started=10)
    stopping = make_worker("stopping", status=WorkerStatus.STOPPING, started=20)
    dead = make_worker("dead", status=WorkerStatus.DEAD, seen=1800, started=3000)
    first, second = held_by(alive), held_by(alive)
    handing_over = held_by(stopping)
    held_by(alive, status="completed")  # ended: no longer held, whatever its owner column says

    assert listed(client) == [
        {
            "id": alive.id,
            "host": "host-alive",
            "pid": 4242,
            "threads": 2,
            "startedAt": utc(alive.started_at),
            "lastSeenAt": utc(alive.last_seen_at),
            "status": "alive",
            "running": sorted([first, second]),
        },
        {
            "id": stopping.id,
            "host": "host-stopping",
            "pid": 4242,
            "threads": 2,
            "startedAt": utc(stopping.started_at),
            "lastSeenAt": utc(stopping.last_seen_at),
            "status": "stopping",
            "running": [handing_over],
        },
        {
            "id": dead.id,
            "host": "host-dead",
            "pid": 4242,
            "threads": 2,
            "startedAt": utc(dead.started_at),
            "lastSeenAt": utc(dead.last_seen_at),
            "status": "dead",
            "running": [],
        },
    ]


@pytest.mark.parametrize("status", [WorkerStatus.ALIVE, WorkerStatus.STOPPING])
def test_a_live_row_silent_past_the_timeout_is_reported_dead(
    client: Client, settings, status: str
) -> None:
    """Before the leader has declared it, and with what it still holds until it is freed."""
    settings.PLOY_WORKER_TIMEOUT_SECONDS = 5
    silent = make_worker("silent", status=status, seen=6)
    recent = make_worker("recent", status=status, seen=4, started=30)
    stranded = held_by(silent)

    rows = {row["id"]: row for row in listed(client)}
    assert rows[silent.id]["status"] == "dead"
    assert rows[silent.id]["running"] == [stranded]
    assert rows[recent.id]["status"] == status
    assert Worker.objects.get(id=silent.id).status == status  # a read changes nothing


def test_dead_workers_are_listed_for_an_hour(client: Client) -> None:
    recent = make_worker("recent", status=WorkerStatus.DEAD, seen=3500)
    make_worker("old", status=WorkerStatus.DEAD, seen=3700)
    make_worker("forgotten", status=WorkerStatus.ALIVE, seen=7200)  # never declared dead

    assert [row["id"] for row in listed(client)] == [recent.id]


def test_a_registered_process_is_listed_alive_with_its_host_and_pid(client: Client) -> None:
    process = WorkerProcess()
    register(process)

    [row] = listed(client)
    assert row["id"] == process.id
    assert (row["host"], row["pid"], row["status"]) == (socket.gethostname(), os.getpid(), "alive")
    assert row["threads"] == 0  # an in-process .run() caller
    assert row["running"] == []


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer wrong", 401),
        (f"Basic {TOKEN}", 401),
        (f"Bearer {TOKEN}", 200),
    ],
)
def test_a_set_token_is_required(client: Client, settings, authorization, status) -> None:
    settings.PLOY_API_TOKEN = TOKEN
    make_worker("alive")
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/api/workers", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert set(response.json()) == {"detail"}
    else:
        assert len(response.json()) == 1


def test_other_methods_are_refused_as_json(client: Client) -> None:
    response = client.post("/api/workers")
    assert response.status_code == 405
    assert response["Allow"] == "GET"
    assert "detail" in response.json()


def test_the_schema_documents_list_workers(client: Client) -> None:
    schema = client.get("/api/openapi.json").json()
    operation = schema["paths"]["/api/workers"]["get"]
    assert operation["operationId"] == "listWorkers"
    item = operation["responses"]["200"]["content"]["application/json"]["schema"]["items"]
    schemas = schema["components"]["schemas"]
    worker = schemas[item["$ref"].rsplit("/", 1)[1]]
    assert set(worker["required"]) == {
        *("id", "host", "pid", "threads", "startedAt", "lastSeenAt", "status", "running")
    }
    status = schemas[worker["properties"]["status"]["$ref"].rsplit("/", 1)[1]]
    assert status["enum"] == ["alive", "stopping", "dead"]


def test_the_list_answers_in_two_queries(client: Client, django_assert_num_queries) -> None:
    for name in "abcde":
        held_by(make_worker(name))
    with django_assert_num_queries(2):
        assert len(listed(client)) == 5
