"""The dashboard's Workers page, and the worker of each attempt on the execution page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard.presenters import fingerprint
from dashboard.worker_views import heartbeat_age
from engine.models import Attempt, WorkerStatus
from tests.test_dashboard import detail_url, htmx, make_execution, make_step
from tests.test_workers_api import held_by, make_worker

pytestmark = pytest.mark.django_db

WORKERS = reverse("dashboard:worker_list")


def row_of(html: str, worker_id: str) -> str:
    match = re.search(rf'<tr id="worker-{re.escape(worker_id)}".*?</tr>', html, re.S)
    assert match, f"no row for {worker_id}"
    return match.group(0)


def test_the_page_lists_workers_with_what_they_run(client: Client) -> None:
    alive = make_worker("alive", seen=0.4, threads=4, pid=101)
    first, second = held_by(alive), held_by(alive)
    idle = make_worker("idle", threads=0, pid=102, started=120)

    response = client.get(WORKERS)

    html = response.content.decode()
    assert response.status_code == 200
    row = row_of(html, alive.id)
    for text in (alive.id, "host-alive", ">101<", ">4<", "badge-alive"):
        assert text in row, text
    assert re.search(r'<td class="heartbeat"[^>]*>0\.[4-9] s ago</td>', row)
    for execution_id in (first, second):
        assert f'href="{detail_url(execution_id)}"' in row
    idle_row = row_of(html, idle.id)
    assert "in-process" in idle_row
    assert "idle" in idle_row
    assert html.index(alive.id) < html.index(idle.id)  # newest first
    assert '<a href="/workers/" aria-current="page">Workers</a>' in html


def test_stopping_stale_and_dead_workers(client: Client, settings) -> None:
    settings.PLOY_WORKER_TIMEOUT_SECONDS = 5
    stopping = make_worker("stopping", status=WorkerStatus.STOPPING)
    stale = make_worker("stale", seen=8)
    dead = make_worker("dead", status=WorkerStatus.DEAD, seen=600)
    make_worker("gone", status=WorkerStatus.DEAD, seen=4000)

    html = client.get(WORKERS).content.decode()

    assert "badge-stopping" in row_of(html, stopping.id)
    stale_row = row_of(html, stale.id)
    assert "badge-dead" in stale_row and "dimmed" in stale_row
    assert re.search(r"8\.\d s ago", stale_row)
    dead_row = row_of(html, dead.id)
    assert "dimmed" in dead_row and "10 m 00 s ago" in dead_row
    assert "host-gone" not in html  # dead for more than an hour
    assert "silent for 5 s is dead" in html
    counters = re.search(r'<ul class="counters worker-counters".*?</ul>', html, re.S).group(0)
    assert re.findall(r"<strong>(\d+)</strong> (\w+)", counters) == [
        ("0", "alive"),
        ("1", "stopping"),
        ("2", "dead"),
    ]


def test_no_worker_says_how_to_start_one(client: Client) -> None:
    html = client.get(WORKERS).content.decode()
    assert "No workers: start one with <code>manage.py runhuey</code>" in html


def test_host_values_are_escaped(client: Client) -> None:
    worker = make_worker("x")
    type(worker).objects.filter(id=worker.id).update(host="<script>alert(1)</script>")
    html = client.get(WORKERS).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize("workers", [1, 30])
def test_the_page_uses_two_queries_whatever_the_number_of_workers(
    client: Client, django_assert_num_queries, workers: int
) -> None:
    for number in range(workers):
        worker = make_worker(f"w{number}", pid=number + 1)
        held_by(worker)
        held_by(worker)

    with django_assert_num_queries(2):
        response = client.get(WORKERS)

    assert response.content.decode().count('class="id-link code"') == 2 * workers


def test_the_table_refreshes_itself_every_two_seconds(client: Client) -> None:
    html = client.get(f"{WORKERS}?x=1").content.decode()
    table = re.search(r'<div id="workers"[^>]*>', html).group(0)
    assert 'hx-get="/workers/?x=1"' in table
    assert "every 2s [!document.hidden]" in table


def test_a_refresh_answers_only_the_table(client: Client) -> None:
    worker = make_worker("alive")

    response = htmx(client, WORKERS, "workers")

    html = response.content.decode()
    assert "<html" not in html
    assert html.lstrip().startswith('<div id="workers"')
    assert worker.id in html
    assert response["Vary"].count("HX-Target") == 1


def test_a_history_restore_gets_the_whole_page(client: Client) -> None:
    response = htmx(client, WORKERS, "workers", **{"HX-History-Restore-Request": "true"})
    assert "<html" in response.content.decode()


def test_the_page_needs_a_get(client: Client) -> None:
    assert client.post(WORKERS).status_code == 405


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-0.3, "0.0 s ago"), (0.04, "0.0 s ago"), (0.44, "0.4 s ago"), (59.9, "59.9 s ago"),
     (61, "1 m 01 s ago"), (3599, "59 m 59 s ago")],
)  # fmt: skip
def test_heartbeat_ages_read_short(seconds: float, text: str) -> None:
    now = timezone.now()
    assert heartbeat_age(now - timedelta(seconds=seconds), now) == text


# --- the execution page --------------------------------------------------------------------


def test_each_attempt_shows_the_worker_that_ran_it(client: Client) -> None:
    execution = make_execution()
    step = make_step(
        execution, "flaky", attempts=[("failed", 10, 11, "boom"), ("completed", 12, 20, "")]
    )
    Attempt.objects.filter(step=step, number=1).update(worker="host-a:11:0123abcd")
    Attempt.objects.filter(step=step, number=2).update(worker="host-b:22:4567cdef")

    html = client.get(detail_url(execution)).content.decode()

    first = re.search(r'<tr class="attempt-failed" id="step-1-attempt-1">.*?</tr>', html, re.S)
    assert 'href="/workers/#worker-host-a:11:0123abcd"' in first.group(0)
    assert ">host-a:11:0123abcd</a>" in first.group(0)
    assert 'href="/workers/#worker-host-b:22:4567cdef"' in html
    assert "on host-a:11:0123abcd" in html  # in the timeline bar's hover text


def test_an_attempt_without_a_recorded_worker_shows_a_dash(client: Client) -> None:
    execution = make_execution()
    make_step(execution, "old")

    html = client.get(detail_url(execution)).content.decode()

    cell = re.search(r'<td class="attempt-worker">(.*?)</td>', html, re.S).group(1)
    assert "—" in cell and "href" not in cell


def test_a_running_execution_names_the_worker_holding_it(client: Client) -> None:
    execution = make_execution(status="running", finished=None)
    assert 'id="execution-owner"' not in client.get(detail_url(execution)).content.decode()
    type(execution).objects.filter(id=execution.id).update(owner="host-a:11:0123abcd")

    html = client.get(detail_url(execution)).content.decode()

    assert (
        '<a class="worker-link code" id="execution-owner" '
        'href="/workers/#worker-host-a:11:0123abcd">host-a:11:0123abcd</a>'
    ) in html


def test_a_new_owner_changes_the_fingerprint() -> None:
    """So a poll after a hand-over re-renders the page instead of answering 204."""
    execution = make_execution(status="running", finished=None)
    now = timezone.now()
    before = fingerprint(execution, [], now)
    execution.owner = "host-b:22:4567cdef"
    assert fingerprint(execution, [], now) != before
