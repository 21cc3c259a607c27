"""An execution's admin page shows a page of its steps and events, a step's page its latest
attempts: the same queries whatever their number, and a link to the list of all of them."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from engine import admin_inlines
from engine.models import Event, Execution, Step
from engine.step_admin import STEPS_SHOWN
from tests.test_api import make_execution
from tests.test_execution_paging import add_steps

pytestmark = pytest.mark.django_db


def page_of(admin_client, url: str) -> tuple[str, list[str]]:
    admin_client.get(url)  # the first page of a session reads and caches its content types
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(url)
    assert response.status_code == 200, url
    return response.content.decode(), [query["sql"] for query in captured.captured_queries]


def execution_page(execution: Execution) -> str:
    return reverse("admin:engine_execution_change", args=[execution.id])


def step_page(step: Step) -> str:
    return reverse("admin:engine_step_change", args=[step.id])


def big_execution(steps: int, attempts: int = 1, events: int = 0) -> Execution:
    execution = make_execution(steps=[])
    add_steps(execution, steps, attempts=attempts)
    Event.objects.bulk_create(
        Event(execution=execution, type=f"note-{n}", created_at=execution.created_at)
        for n in range(events)
    )
    return execution


def test_the_execution_page_sends_the_same_queries_for_3_steps_or_300(admin_client):
    small, big = big_execution(3, attempts=2, events=2), big_execution(300, attempts=4, events=60)
    _html, few = page_of(admin_client, execution_page(small))
    html, many = page_of(admin_client, execution_page(big))
    # Two more for the many: the capped counts of the steps and of the events past the page.
    assert len(many) == len(few) + 2, many
    assert html.count('<tr class="form-row') == STEPS_SHOWN + 50, "20 steps and 50 events"
    assert len(html) < 200_000


def test_the_execution_page_shows_the_first_steps_and_links_to_the_rest(admin_client):
    execution = big_execution(120, attempts=5)
    html, _queries = page_of(admin_client, execution_page(execution))
    assert "step-0019" in html and "step-0020" not in html
    rest = f"{reverse('admin:engine_step_changelist')}?execution={execution.id}"
    assert "Showing the first 20 of 120 steps" in html
    assert f'<a href="{rest}">all of them in the step list</a>' in html
    listed = admin_client.get(f"{rest}&p=3").context["cl"].result_list
    assert [step.name for step in listed] == [f"step-{n:04d}" for n in range(100, 120)]
    # Each step's line shows its latest attempts and links to the step's page for the others.
    first = Step.objects.get(execution=execution, position=0)
    assert f'<a href="{step_page(first)}">2 earlier attempts</a>' in html
    assert "#3 failed" in html and "#5 completed" in html and "#2 failed" not in html


def test_a_few_steps_are_all_shown_with_no_link(admin_client):
    execution = big_execution(3)
    html, _queries = page_of(admin_client, execution_page(execution))
    assert "step-0002" in html and "Showing the first" not in html
    assert "earlier attempt" not in html


def test_the_count_of_the_rest_is_capped(admin_client, monkeypatch):
    monkeypatch.setattr(admin_inlines, "COUNT_CAP", 60)
    execution = big_execution(70)
    html, queries = page_of(admin_client, execution_page(execution))
    assert "Showing the first 20 of over 60 steps" in html
    counts = [sql for sql in queries if "COUNT(" in sql.upper() and "engine_step" in sql]
    assert counts and all("LIMIT 61" in sql for sql in counts), counts


def test_a_step_page_shows_its_latest_attempts_whatever_their_number(admin_client):
    few = add_steps(make_execution(steps=[]), 1, attempts=2)[0]
    many = add_steps(make_execution(steps=[]), 1, attempts=100)[0]
    _html, few_queries = page_of(admin_client, step_page(few))
    html, many_queries = page_of(admin_client, step_page(many))
    assert len(many_queries) == len(few_queries) + 1, "the capped count of the attempts"
    assert html.count('<tr class="form-row') == 10
    rest = f"{reverse('admin:engine_attempt_changelist')}?step={many.id}"
    assert "Showing the latest 10 of 100 attempts" in html
    assert f'<a href="{rest}">all of them in the attempt list</a>' in html
    numbers = [a.number for a in admin_client.get(rest).context["cl"].result_list]
    assert numbers == list(range(100, 50, -1)), "the latest first, 50 a page"


def test_the_events_inline_shows_the_latest(admin_client):
    execution = big_execution(1, events=55)
    html, _queries = page_of(admin_client, execution_page(execution))
    assert "note-54" in html and "note-4<" not in html
    rest = f"{reverse('admin:engine_event_changelist')}?execution={execution.id}"
    assert f'<a href="{rest}">all of them in the event list</a>' in html
    assert len(admin_client.get(rest).context["cl"].result_list) == 50


def test_a_big_value_is_cut_with_a_link_to_it_whole(admin_client):
    execution = make_execution(input={"rows": ["x" * 1000 for _ in range(30)]})
    [step] = add_steps(execution, 1)
    Step.objects.filter(id=step.id).update(output={"rows": ["y" * 1000 for _ in range(30)]})
    html, _queries = page_of(admin_client, execution_page(execution))
    assert "the first 10,000 of 30," in html and "the first 300 of 30," in html
    assert f'href="/executions/{execution.id}/value/?of=input"' in html
    assert html.count("x" * 1000) <= 10 and html.count("y" * 300) <= 1
    step_html, _queries = page_of(admin_client, step_page(step))
    assert f'href="/executions/{execution.id}/value/?of=output&amp;step=1"' in step_html


def test_the_rerun_from_page_offers_every_ended_step_escaped(admin_client):
    execution = big_execution(300)
    Step.objects.filter(execution=execution, position=1).update(name="<b>odd</b>")
    url = reverse("admin:engine_execution_rerun_from", args=[execution.id])
    html, queries = page_of(admin_client, f"{url}?step=step-0299")
    assert html.count("<option ") == 300
    assert '<option value="&lt;b&gt;odd&lt;/b&gt;">&lt;b&gt;odd&lt;/b&gt;</option>' in html
    assert '<option value="step-0299" selected>step-0299</option>' in html
    assert not [sql for sql in queries if '"engine_step"."input"' in sql], "no payload read"
