"""The admin's lists of steps, attempts and events read the page asked for and one more row,
and count nothing: even a capped count reads the whole table for a value that few rows have,
and these tables have no index on their filters."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from engine.models import Event, Step
from tests.test_admin_scale import assert_bounded, engine_queries, many_executions
from tests.test_api import make_execution
from tests.test_execution_paging import add_steps

pytestmark = pytest.mark.django_db

STEPS = "/admin/engine/step/"
ATTEMPTS = "/admin/engine/attempt/"
EVENTS = "/admin/engine/event/"


def get(admin_client, url: str, **params: str):
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(url, params)
    assert response.status_code == 200, url
    return response, engine_queries([query["sql"] for query in captured.captured_queries])


@pytest.fixture
def per_page(monkeypatch):
    """Pages of 3 rows, so that a few rows make several pages."""
    from engine.step_admin import AttemptAdmin, StepAdmin

    for model_admin in (StepAdmin, AttemptAdmin):
        monkeypatch.setattr(model_admin, "list_per_page", 3)
        monkeypatch.setattr(model_admin, "list_max_show_all", 3)
    return 3


@pytest.mark.parametrize("url", [STEPS, ATTEMPTS, EVENTS])
def test_a_filtered_list_reads_one_page_and_one_row_more_and_counts_nothing(admin_client, url):
    many_executions(3)
    params = {"type": "approval"} if url == EVENTS else {"status__exact": "running"}
    _response, queries = get(admin_client, url, **params)
    assert not [sql for sql in queries if "COUNT(" in sql.upper()], queries
    pages = [sql for sql in queries if "LIMIT 51" in sql]
    assert len(pages) == 1, f"one read of the page and the row after it: {queries}"
    assert_bounded(queries)


def test_the_pages_of_a_filtered_list_follow_one_another(admin_client, per_page):
    execution = make_execution(steps=[])
    add_steps(execution, 7, status="failed")
    names = [f"step-{n:04d}" for n in reversed(range(7))]  # the newest first

    def page(number: int) -> tuple[list[str], str]:
        response, _queries = get(admin_client, STEPS, status__exact="failed", p=str(number))
        return [step.name for step in response.context["cl"].result_list], (
            response.content.decode()
        )

    first, first_html = page(1)
    assert first == names[:3]
    assert "over 3 steps" in first_html and "p=2" in first_html and "p=3" not in first_html
    assert page(2)[0] == names[3:6]
    last, html = page(3)
    assert last == names[6:] and "7 steps" in html and "over" not in html
    assert admin_client.get(STEPS, {"status__exact": "failed", "p": "9"}).status_code == 302
    assert 'class="showall"' not in first_html, "an open-ended list is never read whole"


def test_a_single_page_is_read_once(admin_client):
    execution = make_execution(steps=[])
    add_steps(execution, 2, status="failed")
    response, queries = get(admin_client, STEPS, status__exact="failed")
    assert [step.name for step in response.context["cl"].result_list] == ["step-0001", "step-0000"]
    assert len([sql for sql in queries if 'FROM "engine_step"' in sql]) == 1, queries
    assert "2 steps" in response.content.decode()


def test_a_workflow_s_steps_are_listed_newest_execution_first_each_in_order(admin_client):
    older, newer = make_execution(steps=[]), make_execution(steps=[])
    add_steps(older, 2)
    add_steps(newer, 2)
    response, queries = get(admin_client, STEPS, execution__workflow="data_processing")
    listed = [(step.execution_id, step.position) for step in response.context["cl"].result_list]
    assert listed == [(newer.id, 0), (newer.id, 1), (older.id, 0), (older.id, 1)]
    [page] = [sql for sql in queries if "LIMIT 51" in sql]
    assert 'ORDER BY "engine_execution"."id" DESC, "engine_step"."position" ASC' in page
    response, queries = get(admin_client, STEPS, execution=str(older.id))
    assert [step.position for step in response.context["cl"].result_list] == [0, 1]
    response, queries = get(admin_client, STEPS, status__exact="completed")
    assert [s.id for s in response.context["cl"].result_list] == sorted(
        Step.objects.values_list("id", flat=True), reverse=True
    ), "else the newest steps first"


def test_a_name_alone_is_searched_among_the_newest_steps(admin_client, monkeypatch):
    from engine.step_admin import StepAdmin

    monkeypatch.setattr(StepAdmin, "search_window", 2)
    old, new = make_execution(steps=[]), make_execution(steps=[])
    [old_step] = add_steps(old, 1)
    add_steps(new, 2)
    Step.objects.filter(id=old_step.id).update(name="step-0001")

    def found(term: str) -> list[int]:
        response, queries = get(admin_client, STEPS, q=term)
        assert_bounded(queries)
        return [step.id for step in response.context["cl"].result_list]

    newest = list(Step.objects.filter(execution=new, name="step-0001").values_list("id", flat=True))
    assert found("step-0001") == newest, "the old execution's step is past the window"
    prefix = str(old.id)[:36]
    assert found(f"{prefix} step-0001") == [old_step.id], "with an id, no window"


def test_the_lists_leave_joined_payloads_unread(admin_client):
    execution = make_execution(
        steps=[{"name": "one", "status": "failed", "attempts": [{"status": "failed"}]}]
    )
    Event.objects.create(execution=execution, type="note", created_at=execution.created_at)
    for url in (STEPS, ATTEMPTS, EVENTS):
        _response, queries = get(admin_client, url)
        [page] = [sql for sql in queries if "LIMIT" in sql]
        for column in ('"input"', '"output"', '"error_traceback"', '"logs"', '"payload"'):
            assert column not in page, (url, column)
