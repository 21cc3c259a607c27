"""The dashboard's Schedules page and the admin's Schedule actions, through the test client."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from engine import schedules
from engine.models import Schedule
from tests.test_access import HOST, client_as, deployed  # noqa: F401
from tests.test_schedules import T, executions_of, loaded, synced  # noqa: F401

pytestmark = pytest.mark.django_db

PAGE = reverse("dashboard:schedule_list")
PAUSE = reverse("dashboard:pause_schedule", args=["TICKER"])
RESUME = reverse("dashboard:resume_schedule", args=["TICKER"])


def test_the_page_lists_each_schedule_with_its_last_run(client: Client, loaded) -> None:  # noqa: F811
    synced(loaded)
    schedules.tick(now=datetime(2026, 12, 1, 10, 1, tzinfo=UTC))
    [minute] = executions_of("EVERY_MINUTE")
    [ticker] = executions_of("REPORT")
    response = client.get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'aria-current="page">Schedules</a>' in html
    for name in ("EVERY_MINUTE", "NIGHTLY_REPORT", "TICKER"):
        assert f'id="schedule-{name}"' in html
    assert "<code>every 1s</code>" in html and "<code>0 3 * * *</code>" in html
    assert reverse("dashboard:execution_detail", args=[minute.id]) in html
    assert reverse("dashboard:execution_detail", args=[ticker.id]) in html
    assert '<span class="badge badge-running">running</span>' in html
    assert 'datetime="2026-12-02T03:00:00.000Z"' in html  # NIGHTLY_REPORT's next run
    assert html.count('class="button ghost small">Pause</button>') == 3
    assert "csrfmiddlewaretoken" in html


def test_the_page_with_no_schedules_says_how_to_add_one(client: Client) -> None:
    html = client.get(PAGE).content.decode()
    assert "No schedules: add a <code>cron:</code> section" in html


def test_pause_and_resume_with_htmx_answer_the_table(client: Client, loaded) -> None:  # noqa: F811
    synced(loaded)
    htmx = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "schedules"}
    paused = client.post(PAUSE, **htmx)
    assert paused.status_code == 200
    html = paused.content.decode()
    assert html.lstrip().startswith('<div id="schedules"')
    assert "Paused TICKER: no tick runs until it is resumed." in html
    assert 'id="schedule-TICKER" class="schedule dimmed" data-paused="true"' in html
    assert Schedule.objects.get(name="TICKER").paused
    resumed = client.post(RESUME, **htmx).content.decode()
    assert "Resumed TICKER: it runs at its next tick." in resumed
    assert not Schedule.objects.get(name="TICKER").paused


def test_pause_without_javascript_redirects_back(client: Client, loaded) -> None:  # noqa: F811
    synced(loaded)
    response = client.post(PAUSE)
    assert response.status_code == 302 and response["Location"] == PAGE
    assert "Paused TICKER" in client.get(PAGE).content.decode()
    assert client.get(PAUSE).status_code == 405


def test_an_unknown_schedule_is_404(client: Client, loaded) -> None:  # noqa: F811
    synced(loaded)
    response = client.post(reverse("dashboard:pause_schedule", args=["GHOST"]))
    assert response.status_code == 404
    assert not Schedule.objects.filter(paused=True).exists()


@pytest.mark.parametrize(
    ("kind", "sees", "acts"),
    [("anonymous", False, False), ("viewer", True, False), ("operator", True, True)],
)
def test_the_page_follows_the_dashboards_access_rules(deployed, loaded, kind, sees, acts) -> None:  # noqa: F811
    synced(loaded)
    client = client_as(kind)
    page = client.get(PAGE)
    assert (page.status_code == 200) is sees
    if sees:
        assert ("Pause</button>" in page.content.decode()) is acts
    response = client.post(PAUSE)
    assert response.status_code == (302 if acts else 403 if sees else 302)
    assert Schedule.objects.get(name="TICKER").paused is acts


def test_the_admin_pauses_and_resumes_schedules(loaded) -> None:  # noqa: F811
    synced(loaded)
    admin = Client()
    admin.force_login(User.objects.create_superuser("admin", password="pw"))
    changelist = reverse("admin:engine_schedule_changelist")
    page = admin.get(changelist).content.decode()
    assert "Pause selected schedules" in page and "Resume selected schedules" in page
    assert "TICKER" in page and "every 1s" in page
    chosen = {"_selected_action": ["TICKER", "EVERY_MINUTE"]}
    response = admin.post(changelist, {"action": "pause_selected", **chosen}, follow=True)
    assert "Paused EVERY_MINUTE, TICKER." in response.content.decode()
    assert set(Schedule.objects.filter(paused=True).values_list("name", flat=True)) == {
        "TICKER",
        "EVERY_MINUTE",
    }
    admin.post(changelist, {"action": "resume_selected", **chosen})
    assert not Schedule.objects.filter(paused=True).exists()
    change = admin.get(reverse("admin:engine_schedule_change", args=["TICKER"]))
    assert change.status_code == 200 and "Save" not in change.content.decode()


def test_the_admins_actions_need_the_run_permission(loaded) -> None:  # noqa: F811
    synced(loaded)
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_schedule"))
    client = Client()
    client.force_login(viewer)
    changelist = reverse("admin:engine_schedule_changelist")
    assert "Pause selected schedules" not in client.get(changelist).content.decode()
    client.post(changelist, {"action": "pause_selected", "_selected_action": ["TICKER"]})
    assert not Schedule.objects.get(name="TICKER").paused
