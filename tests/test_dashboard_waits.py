"""The dashboard's view of waits and composition: waiting steps, the "Send event" form, the
events table, children and their progress, the parent filter, and parallel branches as lanes.
States are built by running the fixture workflows in this process, as tests/test_waits.py does."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard.timeline import build_timeline
from engine import events, runtime
from engine.models import Event, Execution, Step
from engine.queries import get_execution
from tests.test_dashboard import (
    LIST,
    detail_url,
    early_in_a_refresh_window,
    htmx,
    make_execution,
)

pytestmark = pytest.mark.django_db(transaction=True)

HOST = "ploy.example.com"


def start(binding: str, input: object = None) -> str:
    return runtime.trigger(binding, input).execution_id


def run(execution_id: object, after: float = 0) -> Execution:
    runtime.run_execution(str(execution_id), now=timezone.now() + timedelta(seconds=after))
    return Execution.objects.get(id=execution_id)


def waiting_approval(timeout_ms: int | None = None) -> str:
    execution_id = start("APPROVAL", {"timeout_ms": timeout_ms} if timeout_ms else {})
    assert run(execution_id).status == "running"
    return execution_id


def send_url(execution_id: object) -> str:
    return reverse("dashboard:send_event", args=[execution_id])


def children_of(parent_id: str, step: str | None = None) -> list[Execution]:
    children = Execution.objects.filter(parent_id=parent_id).order_by("id")
    return list(children.filter(parent_step=step) if step else children)


def fan_out_parent(values: list[int], finished: int) -> str:
    """A PARENT whose invoke child has ended and whose invoke_many started one child per
    value, `finished` of which have ended."""
    parent_id = start("PARENT", {"value": 1, "values": values})
    run(parent_id)
    [one] = children_of(parent_id, "one")
    run(one.id)
    run(parent_id)
    for child in children_of(parent_id, "many")[:finished]:
        run(child.id)
    return parent_id


def section(html: str, element_id: str) -> str:
    """The HTML from the element with this id to the end of its section or article."""
    start_at = html.index(f'id="{element_id}"')
    ends = [html.find(tag, start_at) for tag in ("</section>", "</article>")]
    return html[start_at : min(end for end in ends if end != -1)]


# --- waiting steps ----------------------------------------------------------------------------


def test_a_waiting_step_says_which_event_it_waits_for_and_until_when(client: Client) -> None:
    execution_id = waiting_approval(timeout_ms=60_000)
    timeout = Step.objects.get(execution_id=execution_id, name="approval").wake_at

    html = client.get(detail_url(execution_id)).content.decode()

    wait = html.split('id="step-2-wait"')[1].split("</p>")[0]
    assert "Waiting for event <code>approval</code> since" in wait
    assert "times out at" in wait
    stamp = timeout.astimezone(timezone.get_fixed_timezone(0)).strftime("%Y-%m-%dT%H:%M:%S")
    assert f'<time datetime="{stamp}.' in wait  # UTC; dashboard.js adds the local time
    assert '<span class="badge badge-waiting">waiting</span>' in html
    assert "approval · waiting for event &#x27;approval&#x27;" in html  # the timeline bar
    assert 'class="tl-bar bar-wait' in html


def test_a_wait_without_a_timeout_says_so(client: Client) -> None:
    execution_id = waiting_approval()

    html = client.get(detail_url(execution_id)).content.decode()

    assert "no timeout" in html.split('id="step-2-wait"')[1].split("</p>")[0]


def test_the_waiting_badge_is_styled_like_the_sleeping_one() -> None:
    from django.contrib.staticfiles import finders

    css = Path(finders.find("dashboard/dashboard.css")).read_text()

    for kind in ("badge", "dot", "step"):
        assert f".{kind}-waiting {{" in css and f".{kind}-sleeping {{" in css


def test_a_received_event_and_a_timed_out_wait_say_what_happened(client: Client) -> None:
    received = waiting_approval()
    events.send_event(received, "approval", {"ok": True})
    run(received)
    timed_out = waiting_approval(timeout_ms=1000)
    run(timed_out, after=2)

    received_html = client.get(detail_url(received)).content.decode()
    timed_out_html = client.get(detail_url(timed_out)).content.decode()

    assert "Received event <code>approval</code> at" in received_html
    assert "No event <code>approval</code> came before the timeout" in timed_out_html
    assert "<strong>EventTimeout</strong>:" in timed_out_html


# --- the "Send event" form ----------------------------------------------------------------------


def test_a_running_execution_offers_the_send_event_form(client: Client) -> None:
    execution_id = waiting_approval()

    html = client.get(detail_url(execution_id)).content.decode()

    form = section(html, "send-event")
    assert f'action="{send_url(execution_id)}"' in form
    assert "csrfmiddlewaretoken" in form
    assert "data-confirm-event" in form  # dashboard.js asks, naming the type
    assert 'name="type" id="event-type" value="approval"' in form  # what the step waits for
    assert 'name="payload"' in form
    assert "A step waits for <code>approval</code>." in form


def test_refreshes_keep_the_form_once_the_user_has_typed_in_it(client: Client) -> None:
    execution_id = waiting_approval()
    poll_url = f"{detail_url(execution_id)}?v=stale"

    untouched = htmx(client, poll_url, "live").content.decode()
    touched = htmx(client, poll_url, "live", **{"X-Keep-Event-Form": "true"}).content.decode()

    assert "hx-preserve" not in section(untouched, "send-event")  # renewed: new suggestions
    assert 'id="send-event" hx-preserve="true"' in touched  # htmx keeps the one in the browser


def test_an_ended_execution_has_no_send_event_form(client: Client) -> None:
    execution = make_execution()

    html = client.get(detail_url(execution)).content.decode()

    assert 'id="send-event"' not in html
    assert send_url(execution.id) not in html


def test_sending_an_event_stores_it_and_the_execution_goes_on(client: Client) -> None:
    execution_id = waiting_approval()

    response = client.post(
        send_url(execution_id), {"type": "approval", "payload": '{"approved": true}'}
    )

    assert response.status_code == 302 and response["Location"] == detail_url(execution_id)
    [event] = Event.objects.filter(execution_id=execution_id)
    assert (event.type, event.payload, event.consumed_by) == ("approval", {"approved": True}, None)
    page = client.get(detail_url(execution_id)).content.decode()
    assert "Event &#x27;approval&#x27; sent." in page
    execution = run(execution_id)
    assert execution.status == "completed" and execution.output == {"approved": True}


def test_an_empty_payload_means_null(client: Client) -> None:
    execution_id = waiting_approval()

    client.post(send_url(execution_id), {"type": "approval", "payload": "  "})

    assert Event.objects.get(execution_id=execution_id).payload is None


def test_sending_through_htmx_answers_the_refreshed_live_region(client: Client) -> None:
    execution_id = waiting_approval()

    response = client.post(
        send_url(execution_id),
        {"type": "approval", "payload": "[1, 2]"},
        headers={"HX-Request": "true", "HX-Target": "send-event"},
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert (response["HX-Retarget"], response["HX-Reswap"]) == ("#live", "outerHTML")
    assert html.lstrip().startswith("<title>") and 'id="live"' in html and "<html" not in html
    assert "Event &#x27;approval&#x27; sent." in html
    form = section(html, "send-event")
    assert "hx-preserve" not in form, "the answer replaces the form the user sent"
    assert '<textarea name="payload"' in form and "[1, 2]" not in form  # empty again
    event_row = html.split('id="events"')[1]
    assert "<code>approval</code>" in event_row and "not yet" in event_row


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"type": "", "payload": "1"}, "type", "An event needs a type"),
        ({"type": "   ", "payload": ""}, "type", "An event needs a type"),
        ({"type": "a\x00b", "payload": ""}, "type", "Null characters are not allowed."),
        ({"type": "x" * 201, "payload": ""}, "type", "at most 200 characters"),
        ({"type": "approval", "payload": "{not json"}, "payload", "Not valid JSON"),
        ({"type": "approval", "payload": "NaN"}, "payload", "Not valid JSON"),
        ({"type": "approval", "payload": '{"a": 1,\n}'}, "payload", "at line 2, column 1"),
    ],
    ids=["empty", "blank", "nul", "long", "bad-json", "nan", "trailing-comma"],
)
@pytest.mark.parametrize("through_htmx", [False, True], ids=["plain", "htmx"])
def test_a_bad_event_is_explained_inline_and_sends_nothing(
    client: Client, data: dict, field: str, message: str, through_htmx: bool
) -> None:
    execution_id = waiting_approval()
    headers = {"HX-Request": "true", "HX-Target": "send-event"} if through_htmx else {}

    response = client.post(send_url(execution_id), data, headers=headers)

    html = response.content.decode()
    assert response.status_code == 422
    error = html.split(f'id="event-{field}-error"')[1].split("</p>")[0]
    assert message in error
    if through_htmx:
        assert html.lstrip().startswith('<section class="card send-event" id="send-event"')
        opening = html.split(">")[0]
        assert "hx-preserve" not in opening  # the errors replace the form
        assert 'data-touched="true"' in opening  # and refreshes keep them
    else:
        assert "<html" in html and 'id="live"' in html
    assert 'aria-invalid="true"' in html or field == "payload"
    assert not Event.objects.exists()
    assert Step.objects.get(execution_id=execution_id, name="approval").status == "waiting"


def test_the_refused_form_keeps_what_was_typed(client: Client) -> None:
    execution_id = waiting_approval()

    html = client.post(send_url(execution_id), {"type": "approval", "payload": "{oops"}).content

    assert 'value="approval"' in html.decode() and "{oops</textarea>" in html.decode()


@pytest.mark.parametrize("event_type", ["approval", ""], ids=["valid", "empty-type"])
@pytest.mark.parametrize("through_htmx", [False, True], ids=["plain", "htmx"])
def test_sending_to_an_ended_execution_says_so_and_sends_nothing(
    client: Client, through_htmx: bool, event_type: str
) -> None:
    execution_id = waiting_approval()
    headers = {"HX-Request": "true", "HX-Target": "send-event"} if through_htmx else {}
    runtime.cancel_execution(execution_id)  # while the form was on the page

    response = client.post(
        send_url(execution_id), {"type": event_type, "payload": ""}, headers=headers, follow=True
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert "Not sent: the execution had already ended (cancelled)." in html
    assert '<span class="badge badge-cancelled">cancelled</span>' in html
    assert 'id="send-event"' not in html
    assert not Event.objects.exists()


@pytest.mark.parametrize("execution_id", ["00000000-0000-7000-8000-000000000000", "nope"])
def test_sending_to_an_unknown_execution_is_404(client: Client, execution_id: str) -> None:
    response = client.post(send_url(execution_id), {"type": "approval", "payload": ""})

    assert response.status_code == 404
    assert "No execution with this id" in response.content.decode()


def test_send_event_needs_a_post(client: Client) -> None:
    execution_id = waiting_approval()

    assert client.get(send_url(execution_id)).status_code == 405


def test_send_event_is_csrf_protected() -> None:
    execution_id = waiting_approval()
    browser = Client(enforce_csrf_checks=True)

    forged = browser.post(send_url(execution_id), {"type": "approval", "payload": ""})
    page = browser.get(detail_url(execution_id))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]
    sent = browser.post(
        send_url(execution_id),
        {"type": "approval", "payload": "", "csrfmiddlewaretoken": token},
    )

    assert forged.status_code == 403
    assert sent.status_code == 302
    assert Event.objects.filter(execution_id=execution_id).count() == 1


@pytest.fixture
def deployed(settings) -> None:
    """What settings derive from DJANGO_ALLOWED_HOSTS naming a host that is not local."""
    settings.ALLOWED_HOSTS = [HOST]
    settings.DASHBOARD_REQUIRES_LOGIN = True


def staff_client(username: str, *permissions: str) -> Client:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    client = Client(HTTP_HOST=HOST)
    client.force_login(user)
    return client


@pytest.mark.parametrize("through_htmx", [False, True], ids=["plain", "htmx"])
def test_a_staff_user_without_the_permission_cannot_send_an_event(
    deployed, through_htmx: bool
) -> None:
    execution_id = waiting_approval()
    viewer = staff_client("viewer", "view_execution")
    headers = {"HX-Request": "true", "HX-Target": "send-event"} if through_htmx else {}

    page = viewer.get(detail_url(execution_id)).content.decode()
    refused = viewer.post(send_url(execution_id), {"type": "approval"}, headers=headers)

    assert 'id="send-event"' not in page
    assert refused.status_code == 403
    assert "needs the <code>engine.change_execution</code> permission" in refused.content.decode()
    assert not Event.objects.exists()
    anonymous = Client(HTTP_HOST=HOST).post(send_url(execution_id), {"type": "approval"})
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    assert not Event.objects.exists()


def test_the_run_permission_lets_a_staff_user_send_an_event(deployed) -> None:
    execution_id = waiting_approval()
    operator = staff_client("operator", "view_execution", "change_execution")

    page = operator.get(detail_url(execution_id)).content.decode()
    sent = operator.post(send_url(execution_id), {"type": "approval", "payload": "1"})

    assert 'id="send-event"' in page
    assert sent.status_code == 302
    assert Event.objects.get(execution_id=execution_id).payload == 1


# --- the events table ---------------------------------------------------------------------------


def test_the_events_table_lists_each_event_and_the_step_that_received_it(client: Client) -> None:
    execution_id = start("TWO_EVENTS")
    for payload in ("a", {"<b>": "b"}, "c"):
        events.send_event(execution_id, "note", payload)
    run(execution_id)  # consumes a and b; c is kept

    html = client.get(detail_url(execution_id)).content.decode()

    table = section(html, "events")
    rows = table.split("<tr id=")[1:]
    assert len(rows) == 3
    newest, middle, oldest = rows  # newest first
    assert "not yet: kept until a step waits for <code>note</code>" in newest
    assert "&quot;c&quot;" in newest
    assert '<a class="code" href="#step-2">second</a>' in middle
    assert "&lt;b&gt;" in middle and "<b>" not in middle
    assert '<a class="code" href="#step-1">first</a>' in oldest
    assert oldest.count('class="utc"') == 2  # sent, and received
    assert "3 sent to this execution" in table


def test_an_execution_without_events_has_no_events_table(client: Client) -> None:
    execution_id = waiting_approval()

    assert 'id="events"' not in client.get(detail_url(execution_id)).content.decode()


def test_a_poll_notices_an_event_sent(client: Client) -> None:
    execution_id = waiting_approval()
    early_in_a_refresh_window()
    poll_url = client.get(detail_url(execution_id)).context["poll_url"]

    assert htmx(client, poll_url, "live").status_code == 204
    events.send_event(execution_id, "unrelated", 1)  # no step waits for it: no run, but shown

    response = htmx(client, poll_url, "live")
    assert response.status_code == 200 and 'id="events"' in response.content.decode()


# --- parents and children -----------------------------------------------------------------------


def test_a_parent_lists_its_children_with_the_progress_of_its_fan_out(client: Client) -> None:
    parent_id = fan_out_parent([2, 3, 4, 5, 6, 7], finished=4)
    [one] = children_of(parent_id, "one")

    html = client.get(detail_url(parent_id)).content.decode()

    children = section(html, "children")
    assert "7 child executions started by this one" in children
    progress = children.split('class="fan-out"')[1].split("</p>")[0]
    assert "4/6 children done" in progress and "4 completed · 2 running" in progress
    assert '<progress max="6" value="4"' in progress
    rows = children.split("<tbody>")[1].split("<tr>")[1:]
    assert len(rows) == 7
    assert str(one.id) in rows[0] and '<a class="code" href="#step-1">one</a>' in rows[0]
    for index, row in enumerate(rows[1:]):
        assert '<a class="code" href="#step-2">many</a>' in row
        assert f'<td class="num">{index}</td>' in row
        status = "completed" if index < 4 else "running"
        assert f'<span class="badge badge-{status}">' in row
    wait = html.split('id="step-2-wait"')[1].split("</p>")[0]
    assert "Waiting for 2 of 6 children" in wait and "4/6 children done" in wait
    assert f'href="{LIST}?parent={parent_id}"' in children
    assert "Showing the first" not in children


def test_the_invoke_step_links_its_child(client: Client) -> None:
    parent_id = start("PARENT", {"value": 1, "values": []})
    run(parent_id)
    [child] = children_of(parent_id)

    html = client.get(detail_url(parent_id)).content.decode()

    wait = html.split('id="step-1-wait"')[1].split("</p>")[0]
    assert "Waiting for child" in wait
    assert f'href="{detail_url(child.id)}">{child.id}</a>' in wait
    assert '<span class="badge badge-running">running</span>' in wait
    assert "children done" not in html  # one child is no fan-out


def test_a_child_links_back_to_its_parent_and_step(client: Client) -> None:
    parent_id = fan_out_parent([5, 6], finished=0)
    child = children_of(parent_id, "many")[1]

    html = client.get(detail_url(child.id)).content.decode()

    link = html.split('id="parent-link"')[1].split("</span>")[0]
    assert f'href="{detail_url(parent_id)}">{parent_id}</a>' in link
    assert "started by its step" in link and ">many</a> (#1)" in link
    crumbs = html.split('class="crumbs"')[1].split("</nav>")[0]
    assert f'href="{LIST}?parent={parent_id}"' in crumbs


def test_a_top_level_execution_names_no_parent(client: Client) -> None:
    execution_id = waiting_approval()

    html = client.get(detail_url(execution_id)).content.decode()

    assert 'id="parent-link"' not in html and 'id="children"' not in html


def test_a_poll_notices_a_child_ending(client: Client) -> None:
    parent_id = fan_out_parent([1, 2], finished=0)
    early_in_a_refresh_window()
    poll_url = client.get(detail_url(parent_id)).context["poll_url"]
    assert htmx(client, poll_url, "live").status_code == 204

    run(children_of(parent_id, "many")[0].id)  # the parent does not run: only the child ended

    response = htmx(client, poll_url, "live")
    assert response.status_code == 200 and "1/2 children done" in response.content.decode()


def make_fan_out(children: int) -> Execution:
    """A parent waiting on an invoke_many step of `children` children, written directly."""
    parent = make_execution(workflow="parent", binding="PARENT", status="running", finished=None)
    Step.objects.create(
        execution=parent,
        name="many",
        position=0,
        status="waiting",
        input={"binding": "DOUBLE", "children": children},
        started_at=parent.created_at,
    )
    Execution.objects.bulk_create(
        Execution(
            workflow="double",
            binding="DOUBLE",
            status="completed" if index % 3 == 0 else "running",
            parent=parent,
            parent_step="many",
            parent_index=index,
            created_at=parent.created_at,
        )
        for index in range(children)
    )
    return parent


@pytest.mark.parametrize("children", [3, 300])
def test_the_execution_page_costs_the_same_queries_whatever_the_number_of_children(
    client: Client, django_assert_num_queries, children: int
) -> None:
    parent = make_fan_out(children)

    # The execution, steps, attempts, the steps' summary, events; children counted in one
    # query, the first 50 in one.
    with django_assert_num_queries(7):
        response = client.get(detail_url(parent))

    html = response.content.decode()
    done = len(range(0, children, 3))
    assert f"{done}/{children} children done" in html
    shown = min(children, 50)
    assert html.split('id="children"')[1].count('class="id-link code"') == shown
    if children > 50:
        assert f"Showing the first 50 of {children}." in html
        assert f'href="{LIST}?parent={parent.id}">See every child in the list' in html


def test_a_page_without_invoke_steps_does_not_look_for_children(
    client: Client, django_assert_num_queries
) -> None:
    execution_id = waiting_approval()

    # The execution, steps, attempts, the steps' summary, events.
    with django_assert_num_queries(5):
        client.get(detail_url(execution_id))


# --- the list's parent filter -------------------------------------------------------------------


def test_the_list_filters_by_parent(client: Client) -> None:
    parent_id = fan_out_parent([1, 2, 3], finished=2)
    other = waiting_approval()
    children = {str(child.id) for child in children_of(parent_id)}

    def listed(query: dict) -> set[str]:
        rows = client.get(LIST, query).context["page"].rows
        return {str(row.execution.id) for row in rows}

    assert listed({"parent": parent_id}) == children
    assert listed({"parent": parent_id, "status": "running"}) == {
        str(child.id) for child in children_of(parent_id) if child.status == "running"
    }
    assert listed({"parent": parent_id, "workflow": "approval"}) == set()
    assert other in listed({}) and parent_id in listed({})
    html = client.get(LIST, {"parent": parent_id}).content.decode()
    assert f'<input type="hidden" name="parent" value="{parent_id}">' in html  # kept by filters
    notice = html.split('id="parent-filter"')[1].split("</p>")[0]
    assert f'href="{detail_url(parent_id)}">{parent_id}</a>' in notice
    assert "Show every execution" in notice


def test_the_parent_filter_pages_and_refreshes_with_the_filter_kept(client: Client) -> None:
    parent = make_fan_out(60)

    first = client.get(LIST, {"parent": str(parent.id)})
    second = client.get(first.context["next_url"])
    refreshed = htmx(client, f"{LIST}?parent={parent.id}", "executions")

    assert f"parent={parent.id}" in first.context["next_url"]
    assert len(first.context["page"].rows) + len(second.context["page"].rows) == 60
    assert refreshed.status_code == 200
    assert refreshed.content.decode().count('class="id-link code"') == 50


@pytest.mark.parametrize("parent", ["nope", "0192", "a/b"])
def test_a_bad_parent_filter_is_explained(client: Client, parent: str) -> None:
    response = client.get(LIST, {"parent": parent})

    assert response.status_code == 200
    assert "is not an execution id" in response.content.decode()
    assert response.context["page"].rows == []


def test_an_unknown_parent_has_no_children(client: Client) -> None:
    waiting_approval()

    response = client.get(LIST, {"parent": "00000000-0000-7000-8000-000000000000"})

    assert response.context["page"].rows == []
    assert "No execution matches these filters." in response.content.decode()


# --- parallel branches ----------------------------------------------------------------------------


def test_parallel_branches_are_lanes_under_their_group_on_the_timeline(client: Client) -> None:
    execution_id = start("FAN_OUT", {"barrier": True})
    assert run(execution_id).status == "completed"

    html = client.get(detail_url(execution_id)).content.decode()

    timeline = section(html, "timeline-title")
    group_row = timeline.split('class="tl-row tl-group"')[1].split("</div>\n</div>")[0]
    assert ">fan</a>" in group_row and "bar-group" in group_row
    assert "fan · parallel, 3 branches · completed" in group_row
    lanes = timeline.split('aria-label="Branches of fan, run at once"')[1]
    lane_label = r'class="tl-row tl-lane"[^>]*>\s*<a class="tl-label"[^>]*>.*?</span>([^<]+)'
    names = re.findall(lane_label, lanes)
    assert names == ["fan[a]", "fan[b]", "fan[c]"]  # in the order the handler named them


def test_parallel_branches_are_grouped_under_their_step_in_the_steps_list(client: Client) -> None:
    execution_id = start("FAN_OUT", {"barrier": True})
    run(execution_id)

    html = client.get(detail_url(execution_id)).content.decode()

    steps = html.split('id="steps-title"')[1]
    group = steps.split('class="card step step-completed step-kind-group"')[1]
    assert "parallel: 3 branches run at once" in group
    branches = group.split('aria-label="Branches of fan, run at once"')[1]
    assert re.findall(r'<span class="step-name">([^<]+)</span>', branches) == [
        "fan[a]",
        "fan[b]",
        "fan[c]",
    ]
    assert branches.count('class="card step step-branch step-completed"') == 3
    # no branch is listed again as a step of its own
    top = re.findall(r'<article class="card step step-\w+ step-kind-\w+"', steps)
    assert len(top) == 1


def test_a_branch_waiting_to_retry_shows_on_its_own_lane() -> None:
    execution_id = start("FAN_OUT", {"b_failures": 1})
    run(execution_id)

    execution = get_execution(execution_id)
    timeline = build_timeline(execution, list(execution.steps.all()), timezone.now())

    [_, group] = timeline.rows
    assert [lane.name for lane in group.lanes] == ["fan[a]", "fan[b]", "fan[c]"]
    lane_b = group.lanes[1]
    assert [bar.kind for bar in lane_b.bars] == ["failed", "backoff"]
    assert group.bars[0].kind == "group"
