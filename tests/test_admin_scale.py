"""The admin's lists stay cheap at millions of rows: asserted on the SQL they send (no count of
the whole table, no SELECT DISTINCT for filter choices, id search as a range on a key)."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from engine import admin_scale
from engine.models import Execution
from tests.test_api import make_execution
from tests.test_serving import postgres_url  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db

LISTS = ["/admin/engine/execution/", "/admin/engine/step/", "/admin/engine/attempt/"]


def sql_of(admin_client, url: str, **params: str) -> tuple[str, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(url, params)
    assert response.status_code == 200, url
    return response.content.decode(), [query["sql"] for query in captured.captured_queries]


def engine_queries(queries: list[str]) -> list[str]:
    return [sql for sql in queries if '"engine_' in sql]


def assert_bounded(queries: list[str]) -> None:
    for sql in engine_queries(queries):
        assert "DISTINCT" not in sql.upper(), sql
        assert " LIKE " not in sql.upper(), sql
        if "COUNT(" in sql.upper():
            assert re.search(r"LIMIT \d+", sql), f"a count with no bound: {sql}"


def many_executions(count: int = 8) -> list[Execution]:
    return [
        make_execution(
            steps=[{"name": "one", "status": "running", "attempts": [{"status": "completed"}]}]
        )
        for _ in range(count)
    ]


@pytest.fixture
def small_cap(monkeypatch):
    monkeypatch.setattr(admin_scale, "COUNT_CAP", 5)


@pytest.mark.parametrize("url", LISTS)
def test_a_whole_table_reads_its_estimated_size_instead_of_counting(admin_client, small_cap, url):
    many_executions()
    html, queries = sql_of(admin_client, url)
    assert not [sql for sql in engine_queries(queries) if "COUNT(" in sql.upper()], queries
    assert any("max(rowid)" in sql for sql in queries), "SQLite's estimate: the largest rowid"
    assert re.search(r"about \d+ (executions|steps|attempts)", html)
    assert_bounded(queries)


def test_a_filtered_list_counts_no_further_than_the_cap(admin_client, small_cap):
    many_executions()
    html, queries = sql_of(admin_client, LISTS[0], status__exact="running")
    counts = [sql for sql in engine_queries(queries) if "COUNT(" in sql.upper()]
    assert counts and all("LIMIT 6" in sql for sql in counts), counts
    assert_bounded(queries)


def test_a_small_list_still_gets_its_exact_count(admin_client):
    many_executions(3)
    html, queries = sql_of(admin_client, LISTS[0], status__exact="running")
    assert "3 executions" in html and "about" not in html and "over" not in html
    assert_bounded(queries)


def test_the_workflow_filter_offers_the_bindings_of_ploy_yaml_without_reading_rows(admin_client):
    html, queries = sql_of(admin_client, LISTS[0])  # no execution at all
    assert '?workflow=data_processing"' in html and '?workflow=flaky"' in html
    assert_bounded(queries)
    make_execution("retired", binding="RETIRED")
    html, queries = sql_of(admin_client, LISTS[0], workflow="retired")
    assert "1 execution" in html, "a workflow no longer bound still filters"


@pytest.mark.parametrize(
    ("url", "key"),
    [
        (LISTS[0], '"engine_execution"."id"'),
        (LISTS[1], '"engine_step"."execution_id"'),
        (LISTS[2], '"engine_step"."execution_id"'),
        ("/admin/engine/event/", '"engine_event"."execution_id"'),
    ],
)
def test_an_id_prefix_search_is_a_range_on_a_key(admin_client, url, key):
    wanted, *_others = many_executions(3)  # ids alike in their first characters
    html, queries = sql_of(admin_client, url, q=str(wanted.id)[:23].upper())
    searches = [sql for sql in engine_queries(queries) if f"{key} >=" in sql]
    assert searches and all(f"{key} <=" in sql for sql in searches), queries
    assert_bounded(queries)
    found = admin_client.get(url, {"q": str(wanted.id)[:23]}).context["cl"].result_list
    assert len(found) == (0 if "event" in url else 1)
    assert all(execution_of(row) == wanted.id for row in found)


def execution_of(row: object) -> object:
    if isinstance(row, Execution):
        return row.id
    return row.step.execution_id if hasattr(row, "step") else row.execution_id


def test_an_idempotency_key_is_matched_whole(admin_client):
    keyed = make_execution()
    Execution.objects.filter(id=keyed.id).update(idempotency_key="order-42")
    make_execution()

    def found(term: str) -> list[str]:
        response = admin_client.get(LISTS[0], {"q": term})
        return [str(e.id) for e in response.context["cl"].result_list]

    assert found("order-42") == [str(keyed.id)]
    assert found("order-4") == []
    assert found("zz-not-an-id") == []


def test_facet_counts_are_never_offered(admin_client):
    many_executions(2)
    html, queries = sql_of(admin_client, LISTS[0], _facets="True")
    assert "Show counts" not in html
    assert_bounded(queries)


ESTIMATE = """
from django.db import connection
from engine.admin_scale import estimated_rows
from engine.models import Execution
from tests.test_api import make_execution
from tests.test_serving import postgres_url  # noqa: F401 - a fixture
print(estimated_rows(Execution, "default"))
for _ in range(30):
    make_execution()
with connection.cursor() as cursor:
    cursor.execute("ANALYZE engine_execution")
print(estimated_rows(Execution, "default"))
"""


@pytest.mark.django_db(transaction=True)
def test_postgresql_gives_its_planner_estimate(postgres_url):  # noqa: F811
    from tests.test_scaleout import manage

    output = manage({"DATABASE_URL": postgres_url}, "shell", "-c", ESTIMATE)
    before, after = output.splitlines()[-2:]
    assert before in ("None", "0"), "unknown until the table was first analyzed"
    assert after == "30"


@pytest.mark.parametrize(
    ("url", "table"), [(LISTS[0], "engine_execution"), (LISTS[1], "engine_step")]
)
def test_the_lists_leave_the_payloads_in_the_database(admin_client, url, table):
    many_executions(2)
    _html, queries = sql_of(admin_client, url)
    [page] = [sql for sql in queries if sql.startswith(f'SELECT "{table}"."id"')]
    assert f'"{table}"."input"' not in page and f'"{table}"."output"' not in page
    execution = Execution.objects.first()
    change = admin_client.get(f"{LISTS[0]}{execution.id}/change/")
    assert change.status_code == 200 and "input" in change.content.decode()
