"""Dashboard views through the Django test client: content, escaping, filters, paging, queries."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from uuid6 import uuid7

from dashboard.presenters import REFRESH_SECONDS
from dashboard.queries import ListFilters, execution_page
from dashboard.timeline import build_timeline
from dashboard.values import format_duration, highlight, pretty
from engine.models import Attempt, Execution, Step
from engine.queries import get_execution
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db

LIST = reverse("dashboard:execution_list")


def at(ms: float) -> datetime:
    """A moment `ms` milliseconds after a fixed origin, so timings are exact."""
    return datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.get_fixed_timezone(0)) + timedelta(
        milliseconds=ms
    )


def make_execution(
    *,
    workflow: str = "data_processing",
    binding: str = "DATA_FLOW",
    status: str = "completed",
    input: object = None,
    output: object = None,
    error: dict | None = None,
    created: datetime | None = None,
    started: float | None = 5,
    finished: float | None = 100,
) -> Execution:
    created = created or at(0)
    return Execution.objects.create(
        workflow=workflow,
        binding=binding,
        status=status,
        input=input,
        output=output,
        error=error,
        created_at=created,
        started_at=created + timedelta(milliseconds=started) if started is not None else None,
        finished_at=created + timedelta(milliseconds=finished) if finished is not None else None,
    )


def make_step(
    execution: Execution,
    name: str,
    *,
    status: str = "completed",
    input: object = None,
    output: object = None,
    started: float = 10,
    finished: float | None = 20,
    wake: float | None = None,
    retries: int = 3,
    attempts: list[tuple[str, float, float | None, str]] | None = None,
) -> Step:
    """`attempts`: (status, start ms, end ms, error message) after the execution's creation."""
    base = execution.created_at
    attempts = attempts if attempts is not None else [("completed", started, finished, "")]
    step = Step.objects.create(
        execution=execution,
        name=name,
        position=execution.steps.count(),
        status=status,
        input=input,
        output=output,
        retries=retries,
        attempt_count=len(attempts),
        failure_count=sum(1 for attempt in attempts if attempt[0] == "failed"),
        started_at=base + timedelta(milliseconds=started),
        finished_at=base + timedelta(milliseconds=finished) if finished is not None else None,
        wake_at=base + timedelta(milliseconds=wake) if wake is not None else None,
    )
    for number, (attempt_status, begin, end, message) in enumerate(attempts, 1):
        Attempt.objects.create(
            step=step,
            number=number,
            status=attempt_status,
            error_type="ValueError" if message else "",
            error_message=message,
            error_traceback=f'Traceback (most recent call last):\n  File "app.py"\n{message}'
            if message
            else "",
            started_at=base + timedelta(milliseconds=begin),
            finished_at=base + timedelta(milliseconds=end) if end is not None else None,
        )
    return step


def completed_example() -> Execution:
    """data_processing as a worker leaves it: validate, process (with a snapshot), store."""
    execution = make_execution(
        input={"action": "double", "value": 21},
        output={"action": "double", "originalValue": 21, "processedValue": 42},
    )
    make_step(execution, "validate", output={"valid": True, "action": "double"})
    make_step(
        execution,
        "process",
        input={"value": 21},
        output={"processedValue": 42},
        started=20,
        finished=30,
    )
    make_step(execution, "store", output={"changes": 1}, started=30, finished=40)
    return execution


def failed_example() -> Execution:
    """A step that failed twice, waited between attempts, and failed the execution."""
    execution = make_execution(
        workflow="failing",
        binding="FAILING",
        status="failed",
        input={"n": 1},
        error={"type": "StepFailed", "message": "step 'boom' failed", "traceback": "TB-EXEC"},
        finished=3100,
    )
    make_step(
        execution,
        "boom",
        status="failed",
        retries=1,
        started=10,
        finished=2050,
        attempts=[("failed", 10, 20, "first boom"), ("failed", 2030, 2050, "second boom")],
    )
    return execution


def detail_url(execution: Execution | str) -> str:
    execution_id = execution.id if isinstance(execution, Execution) else execution
    return reverse("dashboard:execution_detail", args=[execution_id])


def attempt_bars(html: str, status: str) -> list[str]:
    """The hover texts of the timeline's attempt bars with this status."""
    return re.findall(
        rf'class="tl-bar bar-{status}[^"]*"[^>]*data-tip="([^"]* · attempt [^"]*)"', html
    )


def htmx(client: Client, url: str, target: str, **extra: str):
    return client.get(url, headers={"HX-Request": "true", "HX-Target": target, **extra})


def early_in_a_refresh_window(margin: float = 2.0) -> None:
    """A running execution's page changes every REFRESH_SECONDS (its relative times), so a
    test that expects a poll to find nothing new starts with `margin` seconds of the window
    left: under a loaded machine the page and its poll straddled the window's end."""
    left = REFRESH_SECONDS - time.time() % REFRESH_SECONDS
    if left < margin:
        time.sleep(left + 0.01)


# --- the executions list ------------------------------------------------------------------


def test_list_shows_executions_newest_first_with_progress_and_badges(client: Client) -> None:
    older = completed_example()
    newer = make_execution(workflow="sleeper", binding="SLEEPER", status="running", finished=None)
    make_step(newer, "before")
    make_step(newer, "sleep:1", status="sleeping", input={"ms": 5000}, finished=None, attempts=[])

    response = client.get(LIST)

    html = response.content.decode()
    assert response.status_code == 200
    assert html.index(str(newer.id)) < html.index(str(older.id))
    assert '<span class="badge badge-completed">completed</span>' in html
    assert '<span class="badge badge-running">running</span>' in html
    assert ">3/3<" in html and ">1/2<" in html
    assert 'class="duration live"' in html  # the running one ticks
    assert '<time datetime="2025-01-02T03:04:05.000Z" class="utc">' in html
    # Every script and stylesheet is served from here (no CDN); the page's CSRF token is random
    # text, so the check reads the tags' addresses, not the whole page.
    assets = re.findall(r'<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]*)"', html)
    assert "/static/django_htmx/htmx-2.min.js" in assets
    assert assets and all(asset.startswith("/static/") for asset in assets), assets
    assert 'hx-trigger="every 3s [!document.hidden]' in html


def test_list_counts_executions_by_status_over_the_last_hour(client: Client) -> None:
    now = timezone.now()
    make_execution(status="completed", created=now - timedelta(minutes=5))
    make_execution(status="failed", created=now - timedelta(minutes=10))
    make_execution(status="failed", created=now - timedelta(minutes=20))
    make_execution(status="failed", created=now - timedelta(hours=2))

    response = client.get(LIST)

    counters = response.content.decode().split('id="counters"')[1].split("</ul>")[0]
    assert re.search(r"<strong>2</strong> failed", counters)
    assert re.search(r"<strong>1</strong> completed", counters)
    assert re.search(r"<strong>0</strong> running", counters)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"workflow": "failing"}, {"failing"}),
        ({"status": "completed"}, {"data_processing"}),
        ({"workflow": "failing", "status": "completed"}, set()),
        ({}, {"data_processing", "failing"}),
    ],
)
def test_list_filters_by_workflow_and_status(client: Client, query: dict, expected: set) -> None:
    completed_example()
    failed_example()

    response = client.get(LIST, query)

    rows = response.context["page"].rows
    assert {row.execution.workflow for row in rows} == expected
    for value in query.values():
        assert f'value="{value}" selected' in response.content.decode()


def test_search_by_execution_id_or_its_first_characters(client: Client) -> None:
    wanted = completed_example()
    completed_example()
    text = str(wanted.id)

    by_full_id = client.get(LIST, {"q": text}).context["page"].rows
    by_prefix = client.get(LIST, {"q": text.upper()[:23]}).context["page"].rows
    by_nothing = client.get(LIST, {"q": "ffffffff"}).context["page"].rows

    assert [row.execution.id for row in by_full_id] == [wanted.id]
    assert wanted.id in [row.execution.id for row in by_prefix]
    assert by_nothing == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"q": "not-an-id!"}, "is not (the start of) an execution id"),
        ({"status": "sleepy"}, "status must be one of"),
        ({"cursor": "%%%"}, "is not valid"),
    ],
)
def test_bad_filters_are_explained_not_crashed(client: Client, query: dict, message: str) -> None:
    completed_example()

    response = client.get(LIST, query)

    assert response.status_code == 200
    assert message in response.content.decode()
    assert response.context["page"].rows == []


def test_keyset_pagination_walks_every_execution_once(client: Client) -> None:
    created = [make_execution(status="completed") for _ in range(120)]

    seen: list[uuid.UUID] = []
    url: str | None = LIST
    pages = 0
    while url:
        response = client.get(url)
        seen += [row.execution.id for row in response.context["page"].rows]
        url = response.context["next_url"]
        pages += 1

    assert pages == 3
    assert seen == sorted((execution.id for execution in created), reverse=True)


def test_pagination_keeps_the_filters(client: Client) -> None:
    for _ in range(55):
        make_execution(status="failed", workflow="failing", binding="FAILING")
    make_execution(status="completed")

    first = client.get(LIST, {"status": "failed"})
    second = client.get(first.context["next_url"])

    assert "status=failed" in first.context["next_url"]
    assert len(first.context["page"].rows) == 50
    assert len(second.context["page"].rows) == 5
    assert {row.execution.status for row in second.context["page"].rows} == {"failed"}
    assert second.context["first_url"] == f"{LIST}?status=failed"


@pytest.mark.parametrize("executions", [1, 60])
def test_list_uses_three_queries_whatever_the_number_of_rows(
    client: Client, django_assert_max_num_queries, executions: int
) -> None:
    for _ in range(executions):
        execution = make_execution(status="running", finished=None)
        for name in ("a", "b", "c"):
            make_step(execution, name)

    with django_assert_max_num_queries(3):
        response = client.get(LIST)

    assert response.status_code == 200


def test_htmx_refresh_answers_only_the_table_and_the_counters(client: Client) -> None:
    completed_example()

    response = htmx(client, f"{LIST}?status=completed", "executions")

    html = response.content.decode()
    assert "<html" not in html
    assert 'id="executions"' in html
    assert 'id="counters" class="counters" hx-swap-oob="true"' in html
    assert 'hx-get="/?status=completed"' in html
    assert response["Vary"].count("HX-Request") == 1


def test_history_restore_gets_the_whole_page(client: Client) -> None:
    response = htmx(client, LIST, "executions", **{"HX-History-Restore-Request": "true"})

    assert "<html" in response.content.decode()


def test_step_progress_in_one_query(django_assert_num_queries) -> None:
    completed_example()
    failed_example()

    with django_assert_num_queries(2):
        page = execution_page(ListFilters())

    assert [(row.progress.done, row.progress.total) for row in page.rows] == [(0, 1), (3, 3)]


# --- the trigger form -----------------------------------------------------------------------


def test_trigger_form_starts_an_execution_and_opens_it(client: Client) -> None:
    response = client.post(
        reverse("dashboard:trigger"),
        {"binding": "DATA_FLOW", "input": '{"action": "double", "value": 21}'},
    )

    execution = Execution.objects.get()
    assert response.status_code == 302
    assert response["Location"] == detail_url(execution)
    assert execution.input == {"action": "double", "value": 21}
    assert execution.workflow == "data_processing"


def test_trigger_form_through_htmx_opens_the_execution_without_a_reload(client: Client) -> None:
    response = client.post(
        reverse("dashboard:trigger"),
        {"binding": "SLEEPER", "input": '{"ms": 10}'},
        headers={"HX-Request": "true", "HX-Target": "trigger-form"},
    )

    location = json.loads(response["HX-Location"])
    assert response.status_code == 200
    assert location["path"] == detail_url(Execution.objects.get())
    assert location["select"] == "#main"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"binding": "DATA_FLOW", "input": '{"action": '}, "Not valid JSON: Expecting value"),
        ({"binding": "DATA_FLOW", "input": "{'a': 1}"}, "at line 1, column 2"),
        ({"binding": "GHOST", "input": "{}"}, "Select a valid choice"),
    ],
)
def test_trigger_form_explains_bad_input_inline(client: Client, data: dict, error: str) -> None:
    for headers in ({}, {"HX-Request": "true", "HX-Target": "trigger-form"}):
        response = client.post(reverse("dashboard:trigger"), data, headers=headers)

        html = response.content.decode()
        assert response.status_code == 422
        assert error in html
        assert 'aria-invalid="true"' in html
        assert ("<html" in html) is not bool(headers)
    assert not Execution.objects.exists()


def test_an_empty_input_means_null(client: Client) -> None:
    client.post(reverse("dashboard:trigger"), {"binding": "SLEEPER", "input": "  "})

    assert Execution.objects.get().input is None


def test_edit_and_run_prefills_the_form_with_an_executions_input(client: Client) -> None:
    execution = completed_example()

    response = client.get(LIST, {"trigger": "DATA_FLOW", "from": str(execution.id)})

    form = response.context["form"]
    assert json.loads(form["input"].value()) == {"action": "double", "value": 21}
    assert form["binding"].value() == "DATA_FLOW"


# --- the execution page ----------------------------------------------------------------------


def test_execution_page_shows_input_output_steps_attempts_and_timing(client: Client) -> None:
    execution = completed_example()

    response = client.get(detail_url(execution))

    html = response.content.decode()
    assert response.status_code == 200
    for text in (
        "Execution input",
        "Execution output",
        '<span class="j-key">&quot;processedValue&quot;</span>: <span class="j-num">42</span>',
        '<span class="step-name">validate</span>',
        '<span class="step-name">process</span>',
        '<span class="step-name">store</span>',
        "Step input",
        "Step output",
        "No snapshot",  # validate has no input snapshot
        "1 attempt of 4 allowed",
        "10 ms",  # each step took 10 ms
        "100 ms",  # the execution took 100 ms
        '<time datetime="2025-01-02T03:04:05.005Z" class="utc">',
        "Rerun",
    ):
        assert text in html, text
    assert "Cancel" not in html
    assert "hx-trigger" not in html.split('id="live"')[1].split(">")[0]  # finished: no polling


def test_failed_execution_shows_every_attempt_with_its_traceback(client: Client) -> None:
    execution = failed_example()

    html = client.get(detail_url(execution)).content.decode()

    assert "<strong>StepFailed</strong>: step &#x27;boom&#x27; failed" in html
    assert "TB-EXEC" in html
    assert html.count('class="attempt-failed"') == 2
    for message in ("first boom", "second boom"):
        assert f"<strong>ValueError</strong>: {message}</summary>" in html
        assert f'File "app.py"\n{message}</pre>' in html.replace("&quot;", '"')
    # On the timeline: two red attempt bars and the back-off wait between them.
    assert len(attempt_bars(html, "failed")) == 2
    assert len(re.findall(r'class="tl-bar bar-backoff[^"]*"', html)) == 1
    assert "boom · retry back-off 2.01 s" in html


def test_user_data_is_escaped_everywhere(client: Client) -> None:
    evil = "<script>alert(1)</script>"
    execution = make_execution(
        workflow=evil,
        status="failed",
        input={evil: evil},
        output=evil,
        error={"type": evil, "message": evil, "traceback": evil},
    )
    make_step(
        execution,
        evil,
        status="failed",
        input=[evil],
        attempts=[("failed", 10, 20, evil)],
    )

    html = client.get(detail_url(execution)).content.decode()
    listing = client.get(LIST).content.decode()

    assert "<script>alert" not in html and "<script>alert" not in listing
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listing


def test_large_values_are_cut_with_a_way_to_see_all(client: Client) -> None:
    execution = make_execution(input={"blob": "x" * 30_000}, output=1)

    cut = client.get(detail_url(execution)).content.decode()
    full = client.get(detail_url(execution), {"full": "1"}).content.decode()

    assert "Showing the first 10 KB of 29.3 KB" in cut
    assert f'href="{detail_url(execution)}?full=1#execution-input"' in cut
    assert "x" * 30_000 not in cut
    assert "x" * 30_000 in full
    assert "Showing the first" not in full


@pytest.mark.parametrize("steps", [1, 40])
def test_execution_page_uses_five_queries_whatever_its_size(
    client: Client, django_assert_num_queries, steps: int
) -> None:
    execution = make_execution(status="running", finished=None)
    for number in range(steps):
        make_step(
            execution,
            f"step-{number}",
            attempts=[
                ("failed", 10, 11, "no"),
                ("failed", 12, 13, "no"),
                ("completed", 14, 20, ""),
            ],
        )

    # The execution, a page of its steps, their last attempts, a summary of every step (what
    # the page shows of the steps past it, and what a poll compares), its events.
    with django_assert_num_queries(5):
        response = client.get(detail_url(execution))

    assert response.status_code == 200
    assert len(attempt_bars(response.content.decode(), "failed")) == 2 * steps


def test_running_execution_polls_and_stops_with_286_once_it_ended(client: Client) -> None:
    execution = make_execution(status="running", finished=None, input={"ms": 1})
    make_step(execution, "sleep:1", status="sleeping", input={"ms": 60000}, finished=None,
              wake=60000, attempts=[])  # fmt: skip
    early_in_a_refresh_window()
    page = client.get(detail_url(execution))
    poll_url = page.context["poll_url"]

    unchanged = htmx(client, poll_url, "live")
    Execution.objects.filter(id=execution.id).update(status="cancelled", finished_at=at(200))
    ended = htmx(client, poll_url, "live")

    assert 'hx-trigger="every 1s [!document.hidden]"' in page.content.decode()
    assert unchanged.status_code == 204
    assert ended.status_code == 286
    assert "<html" not in ended.content.decode()
    assert '<span class="badge badge-cancelled">cancelled</span>' in ended.content.decode()


def test_a_poll_with_an_old_fingerprint_gets_the_new_content(client: Client) -> None:
    execution = make_execution(status="running", finished=None)

    response = htmx(client, f"{detail_url(execution)}?v=stale", "live")

    assert response.status_code == 200
    assert 'id="live"' in response.content.decode()


# A fixed id: parallel test workers must collect the same test names.
@pytest.mark.parametrize(
    "execution_id", ["0192f4a6-7b3c-7d2e-8a1f-5c6b7d8e9f01", "not-an-id", "0192"]
)
def test_unknown_execution_gets_a_friendly_404(client: Client, execution_id: str) -> None:
    response = client.get(detail_url(execution_id))

    html = response.content.decode()
    assert response.status_code == 404
    assert "No execution with this id" in html
    assert "Back to executions" in html


def test_unknown_page_uses_the_friendly_404(client: Client) -> None:
    response = client.get("/no/such/page/")

    assert response.status_code == 404
    assert "Page not found" in response.content.decode()


# --- cancel and rerun ------------------------------------------------------------------------


def test_cancel_needs_a_post(client: Client) -> None:
    execution = make_execution(status="running", finished=None)

    response = client.get(reverse("dashboard:cancel", args=[execution.id]))

    assert response.status_code == 405


def test_cancel_with_csrf(client: Client) -> None:
    execution = make_execution(status="running", finished=None)
    strict = Client(enforce_csrf_checks=True)

    refused = strict.post(reverse("dashboard:cancel", args=[execution.id]))
    page = strict.get(detail_url(execution))
    token = page.cookies["csrftoken"].value
    accepted = strict.post(
        reverse("dashboard:cancel", args=[execution.id]), {"csrfmiddlewaretoken": token}
    )

    assert refused.status_code == 403
    assert accepted.status_code == 302
    assert Execution.objects.get(id=execution.id).status == "cancelled"


def test_cancel_through_htmx_answers_the_updated_page_part(client: Client) -> None:
    execution = make_execution(status="running", finished=None)
    make_step(execution, "sleep:1", status="sleeping", input={"ms": 9}, finished=None, wake=60000,
              attempts=[])  # fmt: skip

    response = client.post(
        reverse("dashboard:cancel", args=[execution.id]),
        headers={"HX-Request": "true", "HX-Target": "live"},
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    assert "Execution cancelled." in html
    assert '<span class="badge badge-cancelled">cancelled</span>' in html
    assert Step.objects.get().status == "cancelled"


def test_cancelling_an_ended_execution_says_so(client: Client) -> None:
    execution = completed_example()

    response = client.post(reverse("dashboard:cancel", args=[execution.id]), follow=True)

    assert "Nothing to cancel: the execution had already ended (completed)." in (
        response.content.decode()
    )
    assert Execution.objects.get(id=execution.id).status == "completed"


def test_rerun_starts_a_new_execution_with_the_same_input(client: Client) -> None:
    execution = completed_example()

    response = client.post(reverse("dashboard:rerun", args=[execution.id]))

    rerun = Execution.objects.exclude(id=execution.id).get()
    assert response["Location"] == detail_url(rerun)
    assert rerun.input == execution.input
    assert rerun.rerun_of_id == execution.id
    page = client.get(detail_url(rerun)).content.decode()
    assert "Rerun started with the same input." in page
    assert f'rerun of <a class="code" href="{detail_url(execution)}"' in page


def test_rerun_through_htmx_opens_the_new_execution(client: Client) -> None:
    execution = completed_example()

    response = client.post(
        reverse("dashboard:rerun", args=[execution.id]), headers={"HX-Request": "true"}
    )

    rerun = Execution.objects.exclude(id=execution.id).get()
    assert json.loads(response["HX-Location"])["path"] == detail_url(rerun)


@pytest.mark.parametrize("action", ["dashboard:cancel", "dashboard:rerun"])
def test_actions_on_an_unknown_execution_are_404(client: Client, action: str) -> None:
    response = client.post(reverse(action, args=[str(uuid7())]))

    assert response.status_code == 404


# --- the workflows page ------------------------------------------------------------------------


def test_workflows_page_lists_bindings_with_counts_and_last_run(
    client: Client, django_assert_max_num_queries
) -> None:
    completed_example()
    latest = failed_example()
    Execution.objects.filter(id=latest.id).update(created_at=timezone.now())
    make_execution(
        workflow="failing", binding="FAILING", status="completed", created=timezone.now()
    )

    with django_assert_max_num_queries(2):
        response = client.get(reverse("dashboard:workflow_list"))

    html = response.content.decode()
    rows = {row["binding"].binding: row for row in response.context["rows"]}
    assert rows["FLAKY"]["binding"].retries == 2
    assert rows["FAILING"]["activity"].counts == {
        "running": 0,
        "completed": 1,
        "failed": 1,
        "cancelled": 0,
    }
    assert rows["FAILING"]["activity"].last.status == "completed"
    assert rows["SLEEPER"]["activity"].last is None
    assert "<code>DATA_FLOW</code>" in html and "never" in html


# --- values and the timeline -------------------------------------------------------------------


def test_highlight_escapes_every_piece() -> None:
    html = highlight(json.dumps({"<b>": ["</span><script>", 1.5, None, True]}, indent=2))

    assert "<script>" not in html and "<b>" not in html
    assert '<span class="j-key">&quot;&lt;b&gt;&quot;</span>:' in html
    assert '<span class="j-num">1.5</span>' in html
    assert '<span class="j-lit">null</span>' in html


def test_pretty_counts_bytes_and_cuts_long_values() -> None:
    value = pretty({"é": "x" * 20_000})

    assert value.truncated
    assert value.size == len(json.dumps({"é": "x" * 20_000}, indent=2, ensure_ascii=False).encode())
    assert not pretty({"a": 1}).truncated


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0 ms"),
        (12.4, "12 ms"),
        (1250, "1.25 s"),
        (125_000, "2 m 05 s"),
        (11_040_000, "3 h 04 m"),
    ],
)
def test_durations_read_short(ms: float, text: str) -> None:
    assert format_duration(timedelta(milliseconds=ms)) == text


def test_timeline_places_attempts_waits_and_sleeps_on_one_axis() -> None:
    execution = make_execution(status="completed", started=0, finished=1000)
    make_step(
        execution,
        "flaky",
        started=0,
        finished=500,
        attempts=[("failed", 0, 100, "boom"), ("completed", 300, 500, "")],
    )
    make_step(execution, "sleep:1", input={"ms": 400}, started=500, finished=1000, attempts=[])
    execution = get_execution(execution.id)

    timeline = build_timeline(execution, list(execution.steps.all()), now=at(5000))

    flaky, sleep = timeline.rows[1], timeline.rows[2]
    assert [(bar.kind, bar.left, bar.width) for bar in flaky.bars] == [
        ("failed", "0.000", "10.000"),
        ("backoff", "10.000", "20.000"),
        ("completed", "30.000", "20.000"),
    ]
    assert [(bar.kind, bar.left, bar.width) for bar in sleep.bars] == [
        ("sleep", "50.000", "50.000")
    ]
    assert "flaky · attempt 1 of 4 · failed · ValueError: boom · 100 ms" in flaky.bars[0].label
    assert [tick.label for tick in timeline.ticks] == ["0", "200 ms", "400 ms", "600 ms",
                                                       "800 ms", "1 s"]  # fmt: skip
    assert timeline.now_left is None


def test_timeline_of_a_running_execution_ends_at_now_or_the_next_wake_up() -> None:
    execution = make_execution(status="running", started=0, finished=None)
    make_step(execution, "flaky", status="running", started=0, finished=None, wake=4000,
              attempts=[("failed", 0, 1000, "boom")])  # fmt: skip
    execution = get_execution(execution.id)

    timeline = build_timeline(execution, list(execution.steps.all()), now=at(2000))

    backoff = timeline.rows[1].bars[-1]
    assert (backoff.kind, backoff.left, backoff.width, backoff.planned) == (
        "backoff",
        "25.000",
        "75.000",
        True,
    )
    assert timeline.now_left == "50.000"


# --- with a real worker ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_real_failing_run_shows_each_failed_attempt_on_the_page(client: Client, start_worker):
    start_worker()
    client.post(reverse("dashboard:trigger"), {"binding": "FAILING", "input": "{}"})
    execution = Execution.objects.get()

    wait_for(lambda: Execution.objects.get(id=execution.id).status == "failed", timeout=30)
    html = client.get(detail_url(execution)).content.decode()

    assert html.count('class="attempt-failed"') == 2  # retries: 1 in ploy.yaml
    assert "<strong>ZeroDivisionError</strong>: division by zero" in html
    assert "Traceback (most recent call last)" in html
    assert len(attempt_bars(html, "failed")) == 2
    assert len(re.findall(r'class="tl-bar bar-backoff[^"]*"', html)) == 1
