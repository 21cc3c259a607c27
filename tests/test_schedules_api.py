"""`GET /api/schedules` and pausing and resuming one, over HTTP through the test client."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import Client

from engine import schedules
from engine.models import Schedule
from tests.test_schedules import CONFIG, T, executions_of, loaded, synced  # noqa: F401

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-token"


@pytest.fixture(autouse=True)
def _no_token(settings) -> None:
    settings.PLOY_API_TOKEN = None


def test_list_schedules(client: Client, loaded) -> None:  # noqa: F811
    synced(loaded)
    schedules.tick(now=T + (datetime(2026, 12, 1, 10, 1, tzinfo=UTC) - T))
    [minute] = executions_of("EVERY_MINUTE")
    response = client.get("/api/schedules")
    assert response.status_code == 200
    by_name = {item["name"]: item for item in response.json()}
    assert list(by_name) == ["EVERY_MINUTE", "NIGHTLY_REPORT", "TICKER"]
    assert by_name["EVERY_MINUTE"] == {
        "name": "EVERY_MINUTE",
        "schedule": "* * * * *",
        "workflow": "scheduled",
        "nextRunAt": "2026-12-01T10:02:00.000Z",
        "lastExecutionId": str(minute.id),
        "paused": False,
    }
    assert by_name["NIGHTLY_REPORT"]["nextRunAt"] == "2026-12-02T03:00:00.000Z"
    assert by_name["NIGHTLY_REPORT"]["lastExecutionId"] is None
    assert by_name["TICKER"]["schedule"] == "every 1s"
    assert by_name["TICKER"]["workflow"] == "REPORT"


@pytest.mark.parametrize(
    ("path", "status", "paused", "next_run"),
    [
        ("/api/schedules/TICKER/pause", 200, True, None),
        ("/api/schedules/TICKER/resume", 200, False, "set"),
        ("/api/schedules/GHOST/pause", 404, None, None),
        ("/api/schedules/GHOST/resume", 404, None, None),
    ],
)
def test_pause_and_resume(client: Client, loaded, path, status, paused, next_run) -> None:  # noqa: F811
    synced(loaded)
    if path.endswith("resume"):
        schedules.pause("TICKER")
    response = client.post(path)
    assert response.status_code == status
    body = response.json()
    if status == 404:
        assert body == {"detail": "no schedule named 'GHOST': use a name of ploy.yaml's cron:"}
        return
    assert body["name"] == "TICKER" and body["paused"] is paused
    assert (body["nextRunAt"] is None) == (next_run is None)
    assert Schedule.objects.get(name="TICKER").paused is paused


def test_pause_twice_and_resume_twice_are_harmless(client: Client, loaded) -> None:  # noqa: F811
    synced(loaded)
    assert client.post("/api/schedules/TICKER/pause").json()["paused"] is True
    assert client.post("/api/schedules/TICKER/pause").json()["paused"] is True
    first = client.post("/api/schedules/TICKER/resume").json()
    second = client.post("/api/schedules/TICKER/resume").json()
    assert first == second and first["paused"] is False


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/schedules"),
        ("post", "/api/schedules/TICKER/pause"),
        ("post", "/api/schedules/TICKER/resume"),
    ],
)
def test_the_api_token_guards_schedules(client: Client, settings, loaded, method, path) -> None:  # noqa: F811
    synced(loaded)
    settings.PLOY_API_TOKEN = TOKEN
    refused = getattr(client, method)(path)
    assert refused.status_code == 401
    assert "detail" in refused.json()
    assert not Schedule.objects.get(name="TICKER").paused
    allowed = getattr(client, method)(path, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert allowed.status_code == 200


def test_get_is_the_only_method_of_the_list(client: Client, loaded) -> None:  # noqa: F811
    synced(loaded)
    assert client.post("/api/schedules").status_code == 405
    assert client.get("/api/schedules/TICKER/pause").status_code == 405
