"""Big executions, paged: the API's and the dashboard's pages of steps, the last attempts of a
step, big values on demand; each at a fixed number of queries whatever the execution holds."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from dashboard.execution_reads import LIVE_STEPS_MAX, STEPS_SHOWN
from engine.models import Attempt, Execution, Step
from engine.records import load_record
from tests.test_dashboard import at, detail_url, htmx, make_execution

pytestmark = pytest.mark.django_db


def add_steps(execution: Execution, count: int, *, attempts: int = 1, status: str = "completed"):
    """`count` steps named step-0000... at positions after the existing ones, each with
    `attempts` attempts (all failed but the last), in two bulk statements."""
    base = execution.created_at
    first = execution.steps.count()
    steps = Step.objects.bulk_create(
        Step(
            execution=execution,
            name=f"step-{position:04d}",
            position=position,
            status=status,
            output={"n": position},
            retries=attempts,
            attempt_count=attempts,
            failure_count=attempts - 1,
            started_at=base + timedelta(milliseconds=position),
            finished_at=base + timedelta(milliseconds=position + 1),
        )
        for position in range(first, first + count)
    )
    Attempt.objects.bulk_create(
        Attempt(
            step=step,
            number=number,
            status="completed" if number == attempts else "failed",
            error_type="" if number == attempts else "ValueError",
            error_message="" if number == attempts else f"boom {number}",
            started_at=step.started_at,
            finished_at=step.finished_at,
        )
        for step in steps
        for number in range(1, attempts + 1)
    )
    return steps


def names(items: list[dict]) -> list[str]:
    return [item["name"] for item in items]


# --- the API ------------------------------------------------------------------------------------


def test_the_api_lists_the_first_100_steps_and_pages_the_rest_each_once_in_order(
    client: Client,
) -> None:
    execution = make_execution()
    add_steps(execution, 250)
    expected = [f"step-{position:04d}" for position in range(250)]

    answer = client.get(f"/api/executions/{execution.id}").json()
    seen = names(answer["steps"])
    cursor = answer["stepsNextCursor"]
    pages = 0
    while cursor:
        page = client.get(f"/api/executions/{execution.id}/steps", {"cursor": cursor, "limit": 70})
        assert page.status_code == 200
        seen += names(page.json()["items"])
        cursor = page.json()["nextCursor"]
        pages += 1

    assert len(answer["steps"]) == 100
    assert pages == 3  # 150 steps after the first 100, 70 at a time
    assert seen == expected
    assert answer["steps"][0]["attempts"][0]["status"] == "completed"


def test_a_small_execution_lists_every_step_and_no_cursor(client: Client) -> None:
    execution = make_execution()
    add_steps(execution, 3, attempts=2)

    answer = client.get(f"/api/executions/{execution.id}").json()
    steps = client.get(f"/api/executions/{execution.id}/steps").json()

    assert answer["stepsNextCursor"] is None
    assert names(answer["steps"]) == ["step-0000", "step-0001", "step-0002"]
    assert [attempt["number"] for attempt in answer["steps"][1]["attempts"]] == [1, 2]
    assert steps == {"items": answer["steps"], "nextCursor": None}


def test_a_page_that_ends_exactly_at_the_last_step_has_no_next_cursor(client: Client) -> None:
    execution = make_execution()
    add_steps(execution, 100)

    assert client.get(f"/api/executions/{execution.id}").json()["stepsNextCursor"] is None


@pytest.mark.parametrize("steps", [3, 300])
def test_the_api_reads_an_execution_in_two_queries_whatever_its_size(
    client: Client, django_assert_num_queries, steps: int
) -> None:
    execution = make_execution()
    add_steps(execution, steps, attempts=3)

    # The execution; its first page of steps joined with their attempts.
    with django_assert_num_queries(2):
        response = client.get(f"/api/executions/{execution.id}")
    with django_assert_num_queries(2):
        page = client.get(f"/api/executions/{execution.id}/steps", {"cursor": "1", "limit": 200})

    assert len(response.json()["steps"]) == min(steps, 100)
    assert len(page.json()["items"]) == min(steps - 2, 200)


@pytest.mark.parametrize(
    ("query", "status", "detail"),
    [
        ({"cursor": "abc"}, 422, "cursor"),
        ({"cursor": "-1"}, 422, "cursor"),
        ({"limit": 0}, 422, "limit"),
        ({"limit": 201}, 422, "limit"),
        ({"after": 3}, 422, "unknown query parameter 'after'"),
    ],
)
def test_bad_step_page_parameters_are_explained(
    client: Client, query: dict, status: int, detail: str
) -> None:
    execution = make_execution()

    response = client.get(f"/api/executions/{execution.id}/steps", query)

    assert response.status_code == status
    assert detail in response.json()["detail"]


@pytest.mark.parametrize("execution_id", ["01a2313e-d6d1-7b3d-a0f3-52b4a6ed9d2e", "nope"])
def test_the_steps_of_an_unknown_execution_are_404(client: Client, execution_id: str) -> None:
    response = client.get(f"/api/executions/{execution_id}/steps")

    assert response.status_code == 404
    assert execution_id in response.json()["detail"]


def test_python_get_execution_still_returns_every_step() -> None:
    execution = make_execution()
    add_steps(execution, 250, attempts=2)

    record = load_record(execution.id)

    assert len(record.steps) == 250
    assert all(len(step.attempts) == 2 for step in record.steps)


# --- the dashboard ------------------------------------------------------------------------------


def step_names(html: str) -> list[str]:
    return re.findall(r'<span class="step-name">([^<]+)</span>', html)


@pytest.mark.parametrize("steps", [3, 300])
def test_the_execution_page_costs_five_queries_and_more_steps_four_whatever_their_number(
    client: Client, django_assert_num_queries, steps: int
) -> None:
    execution = make_execution(status="running", finished=None)
    add_steps(execution, steps, attempts=30 if steps == 300 else 2)

    with django_assert_num_queries(5):
        response = client.get(detail_url(execution))
    with django_assert_num_queries(4):  # the steps only: not the events
        more = htmx(client, f"{detail_url(execution)}?steps_after=0", "steps-more")

    html = response.content.decode()
    assert len(step_names(html)) == min(steps, STEPS_SHOWN)
    assert "<dt>Steps</dt><dd>" + str(steps) in html
    assert more.status_code == 200


def test_more_steps_walk_every_step_once_in_order(client: Client) -> None:
    execution = make_execution()
    add_steps(execution, 230)

    html = client.get(detail_url(execution)).content.decode()
    seen = step_names(html)
    requests = 0
    while match := re.search(r'id="steps-more">\s*<a [^>]*hx-get="([^"]+)"', html):
        html = htmx(client, match.group(1).replace("&amp;", "&"), "steps-more").content.decode()
        assert "<html" not in html
        seen += step_names(html)
        requests += 1

    assert requests == 4  # 50 steps a page
    assert seen == [f"step-{position:04d}" for position in range(230)]


def test_a_page_runs_on_to_the_last_branch_of_a_parallel_group_it_would_split(
    client: Client,
) -> None:
    execution = make_execution()
    add_steps(execution, STEPS_SHOWN - 2)  # positions 0-47; the group is the 49th step
    keys = ["a", "b", "c", "d", "e"]
    base = execution.created_at
    Step.objects.create(
        execution=execution, name="fan", position=STEPS_SHOWN - 2, status="completed",
        input={"branches": keys}, output={key: 1 for key in keys}, started_at=base,
        finished_at=base + timedelta(milliseconds=5),
    )  # fmt: skip
    for offset, key in enumerate(keys, start=STEPS_SHOWN - 1):
        Step.objects.create(
            execution=execution, name=f"fan[{key}]", position=offset, branch_of="fan",
            status="completed", output=1, started_at=base, finished_at=base,
        )  # fmt: skip
    add_steps(execution, 20)  # after the group: step-0054 on

    html = client.get(detail_url(execution)).content.decode()
    branches = html.split('class="branches"')[1].split("</article>\n  </div>")[0]
    more = re.search(r'id="steps-more">\s*<a [^>]*hx-get="([^"]+)"', html).group(1)
    rest = htmx(client, more.replace("&amp;", "&"), "steps-more").content.decode()

    assert step_names(branches) == [f"fan[{key}]" for key in keys]  # all five, in their group
    assert step_names(html)[-6:] == ["fan", *[f"fan[{key}]" for key in keys]]
    assert "steps_after=53" in more
    assert step_names(rest) == [f"step-{position:04d}" for position in range(54, 74)]


def test_the_live_refresh_of_loaded_steps_reads_them_all_again_in_one_answer(
    client: Client, django_assert_num_queries
) -> None:
    execution = make_execution(status="running", finished=None)
    add_steps(execution, 700)
    url = f"{detail_url(execution)}?steps_after=49"

    with django_assert_num_queries(4):
        loaded = htmx(client, f"{url}&through=149", "steps-extra").content.decode()
    capped = htmx(client, f"{url}&through=999999999", "steps-extra").content.decode()
    more = htmx(client, f"{url}&through=149", "steps-more").content.decode()

    assert step_names(loaded) == [f"step-{position:04d}" for position in range(50, 150)]
    assert "steps_after=149" in loaded  # the "more" link goes on from the last one
    assert len(step_names(capped)) == LIVE_STEPS_MAX
    assert len(step_names(more)) == 100  # "through" is the refresh's: more asks for it too


def test_more_steps_without_javascript_is_a_page_of_its_own(client: Client) -> None:
    execution = make_execution()
    add_steps(execution, 150)

    html = client.get(detail_url(execution), {"steps_after": "99"}).content.decode()

    assert step_names(html) == [f"step-{position:04d}" for position in range(100, 150)]
    assert "Steps 101 to 150 of 150." in html
    assert f'href="{detail_url(execution)}">Back to the first steps' in html
    assert 'id="steps-more"' not in html


def test_the_timeline_draws_the_window_and_one_row_for_the_other_steps(client: Client) -> None:
    execution = make_execution(finished=1000)
    add_steps(execution, 250)

    html = client.get(detail_url(execution)).content.decode()
    timeline = html.split('id="timeline-title"')[1].split("</section>")[0]

    assert timeline.count('class="tl-row"') == 1 + 50 + 1  # the execution, the window, the rest
    assert "200 more steps" in timeline
    assert "steps 51 to 250 · 200 steps, 0 failed, 0 not ended" in timeline
    assert 'href="#steps-more"' in timeline


def test_a_step_shows_its_last_attempts_and_all_of_them_on_demand(
    client: Client, django_assert_num_queries
) -> None:
    execution = make_execution(status="failed")
    add_steps(execution, 1, attempts=100)

    html = client.get(detail_url(execution)).content.decode()
    url = reverse("dashboard:step_attempts", args=[execution.id, 1])
    with django_assert_num_queries(2):
        every = htmx(client, url, "step-1-attempts")
    plain = client.get(url)

    shown = re.findall(r'id="step-1-attempt-(\d+)"', html)
    assert shown == [str(number) for number in range(91, 101)]
    assert f'hx-get="{url}"' in html and "Show all 100 attempts" in html
    assert "9 earlier attempts" not in html and "90 earlier attempts" in html  # on the timeline
    numbers = re.findall(r'id="step-1-attempt-(\d+)"', every.content.decode())
    assert numbers == [str(number) for number in range(1, 101)]
    assert "<html" not in every.content.decode() and "Show all" not in every.content.decode()
    assert plain.status_code == 200 and "<html" in plain.content.decode()
    assert "<strong>ValueError</strong>: boom 1\n" in plain.content.decode()


def test_attempts_of_an_unknown_step_are_404(client: Client) -> None:
    execution = make_execution()

    response = client.get(reverse("dashboard:step_attempts", args=[execution.id, 7]))

    assert response.status_code == 404


def test_a_big_value_reaches_the_page_cut_and_loads_whole_on_demand(client: Client) -> None:
    big = {"rows": ["x" * 1000 for _ in range(500)]}  # about 500 KB
    execution = make_execution(input=big)
    [step] = add_steps(execution, 1)
    Step.objects.filter(id=step.id).update(output=big)

    html = client.get(detail_url(execution)).content.decode()
    value_url = reverse("dashboard:stored_value", args=[execution.id])
    whole = htmx(client, f"{value_url}?of=output&step=1", "step-1-output")
    raw = client.get(value_url, {"of": "input"})

    assert len(html) < 100_000
    assert html.count("Showing the first 10 KB of 490.2 KB") == 2
    assert f'hx-get="{value_url}?of=output&amp;step=1"' in html
    assert f'hx-get="{value_url}?of=input"' in html
    assert whole.status_code == 200
    assert whole.content.decode().count("x" * 1000) == 500
    assert 'id="step-1-output"' in whole.content.decode()
    assert "Showing the first" not in whole.content.decode()
    assert raw["Content-Type"] == "application/json"
    assert json.loads(raw.content) == big


@pytest.mark.parametrize("query", [{"of": "secret"}, {"of": "output", "step": "9"}])
def test_an_unknown_value_is_404(client: Client, query: dict) -> None:
    execution = make_execution()

    response = client.get(reverse("dashboard:stored_value", args=[execution.id]), query)

    assert response.status_code == 404


def test_a_poll_notices_a_change_past_the_window(client: Client) -> None:
    execution = make_execution(status="running", finished=None)
    add_steps(execution, 300)
    poll_url = client.get(detail_url(execution)).context["poll_url"]

    unchanged = htmx(client, poll_url, "live")
    Step.objects.filter(execution=execution, position=250).update(status="failed")
    changed = htmx(client, poll_url, "live")

    assert unchanged.status_code in (204, 200)  # 200 only when the 5 s refresh tick passed
    assert changed.status_code == 200
    assert "1 failed" in changed.content.decode()


def test_an_execution_running_for_weeks_keeps_a_few_ticks_on_its_timeline() -> None:
    from dashboard.timeline import MAX_TICKS, build_timeline

    execution = make_execution(status="running", finished=None)

    timeline = build_timeline(execution, [], at(0) + timedelta(days=700))

    assert 2 <= len(timeline.ticks) <= MAX_TICKS + 1
    assert timeline.ticks[1].label.endswith(" d")
