"""The Django admin: read-only executions, steps and attempts; cancel and rerun actions and the
"Trigger a workflow" view, all through engine.runtime."""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from engine.models import Attempt, Execution, WorkerStatus
from tests.test_api import make_execution
from tests.test_workers_api import make_worker

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/engine/execution/"
TRIGGER = "/admin/engine/execution/trigger/"


def change_url(execution: Execution | str) -> str:
    execution_id = execution.id if isinstance(execution, Execution) else execution
    return reverse("admin:engine_execution_change", args=[execution_id])


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def act(client: Client, action: str, *executions: Execution, **extra: str):
    data = {"action": action, "_selected_action": [str(e.id) for e in executions], **extra}
    return client.post(CHANGELIST, data, follow=True)


def staff_client(*permissions: str) -> Client:
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    client = Client()
    client.force_login(user)
    return client


# --- lists, search and pages ------------------------------------------------------------------


def test_the_changelist_filters_by_workflow_and_status(admin_client):
    running = make_execution()
    done = make_execution(status="completed")
    sleeper = make_execution("sleeper", binding="SLEEPER")

    def listed(query: str) -> set[str]:
        response = admin_client.get(CHANGELIST + query)
        assert response.status_code == 200
        return {str(e.id) for e in response.context["cl"].result_list}

    assert listed("") == {str(running.id), str(done.id), str(sleeper.id)}
    assert listed("?status__exact=completed") == {str(done.id)}
    assert listed("?workflow=sleeper") == {str(sleeper.id)}
    assert listed("?workflow=data_processing&status__exact=running") == {str(running.id)}


@pytest.mark.parametrize("term", ["full", "dashless", "prefix", "uppercase"])
def test_the_changelist_searches_by_id(admin_client, term):
    wanted, _other = make_execution(), make_execution()
    text = {
        "full": str(wanted.id),
        "dashless": wanted.id.hex,
        "prefix": str(wanted.id)[:23],
        "uppercase": str(wanted.id).upper(),
    }[term]
    response = admin_client.get(CHANGELIST, {"q": text})
    assert [e.id for e in response.context["cl"].result_list] == [wanted.id]


def test_the_execution_page_shows_pretty_escaped_json_and_inline_steps(admin_client):
    execution = make_execution(
        input={"note": "<script>alert(1)</script>", "value": 21},
        steps=[
            {
                "name": "validate",
                "status": "failed",
                "input": {"html": "<b>bold</b>"},
                "attempts": [
                    {
                        "status": "failed",
                        "error_type": "ValueError",
                        "error_message": "Missing <action>",
                        "error_traceback": "Traceback (most recent call last): ...",
                    }
                ],
            }
        ],
    )
    response = admin_client.get(change_url(execution))
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "{\n  &quot;note&quot;: &quot;&lt;script&gt;" in html, "indented JSON"
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "#1 failed: ValueError: Missing &lt;action&gt;" in html
    assert 'name="_save"' not in html, "read-only: nothing to save"


def test_step_and_attempt_pages_are_read_only_and_show_tracebacks(admin_client):
    execution = make_execution(
        steps=[
            {
                "name": "boom",
                "status": "failed",
                "attempts": [
                    {
                        "status": "failed",
                        "error_type": "ZeroDivisionError",
                        "error_message": "division by zero",
                        "error_traceback": "Traceback <here>",
                    }
                ],
            }
        ]
    )
    step = execution.steps.get()
    attempt = step.attempts.get()
    step_page = admin_client.get(reverse("admin:engine_step_change", args=[step.id]))
    attempt_page = admin_client.get(reverse("admin:engine_attempt_change", args=[attempt.id]))
    for page in (step_page, attempt_page):
        assert page.status_code == 200
        assert "Traceback &lt;here&gt;" in page.content.decode()
    assert admin_client.get("/admin/engine/step/", {"q": str(execution.id)}).status_code == 200
    assert admin_client.get("/admin/engine/attempt/?status__exact=failed").status_code == 200


@pytest.mark.parametrize(
    "url", ["/admin/engine/execution/add/", "/admin/engine/step/add/", "/admin/engine/attempt/add/"]
)
def test_rows_cannot_be_added_by_hand(admin_client, url):
    assert admin_client.get(url).status_code == 403


def test_editing_and_deleting_are_refused(admin_client):
    execution = make_execution()
    response = admin_client.post(change_url(execution), {"status": "completed"})
    assert response.status_code == 403
    assert admin_client.post(f"{CHANGELIST}{execution.id}/delete/").status_code == 403
    assert Execution.objects.get(id=execution.id).status == "running"


# --- actions ----------------------------------------------------------------------------------


def test_cancel_action_reports_each_execution(admin_client):
    running, done = make_execution(), make_execution(status="completed")
    response = act(admin_client, "cancel_selected", running, done)
    assert response.status_code == 200
    assert sorted(messages_of(response)) == sorted(
        [
            f'Cancelled <a href="{change_url(running)}">{running.id}</a>.',
            f"Not cancelled: execution {done.id} has already ended (completed).",
        ]
    )
    assert Execution.objects.get(id=running.id).status == "cancelled"
    assert Execution.objects.get(id=done.id).status == "completed"


def test_rerun_action_starts_new_executions_with_the_same_input(admin_client):
    failed = make_execution(status="failed", input={"action": "double", "value": 21})
    retired = make_execution("retired", binding="RETIRED", status="completed")
    response = act(admin_client, "rerun_selected", failed, retired)
    rerun = Execution.objects.get(rerun_of=failed)
    assert (rerun.input, rerun.status, rerun.binding) == (failed.input, "running", "DATA_FLOW")
    assert sorted(messages_of(response)) == sorted(
        [
            f'Rerun of <a href="{change_url(failed)}">{failed.id}</a> started as '
            f'<a href="{change_url(rerun)}">{rerun.id}</a>.',
            f"Not rerun {retired.id}: unknown workflow 'retired': use a binding or workflow "
            "name from ploy.yaml.",
        ]
    )
    assert Execution.objects.count() == 3


def test_the_execution_page_buttons_act_and_come_back(admin_client):
    execution = make_execution(input={"n": 1})
    page = admin_client.get(change_url(execution)).content.decode()
    assert 'value="cancel_selected"' in page and 'value="rerun_selected"' in page

    response = act(admin_client, "cancel_selected", execution, next=change_url(execution))
    assert response.redirect_chain[-1][0] == change_url(execution)
    assert Execution.objects.get(id=execution.id).status == "cancelled"
    page = response.content.decode()
    assert 'value="cancel_selected"' not in page, "no cancel button once it has ended"

    response = act(admin_client, "rerun_selected", execution, next="https://elsewhere.example/")
    assert response.redirect_chain[-1][0] == CHANGELIST, "never redirected off-site"


def test_a_view_only_user_sees_executions_but_cannot_act(client):
    viewer = staff_client("view_execution")
    execution = make_execution()
    response = viewer.get(CHANGELIST)
    assert response.status_code == 200
    assert "cancel_selected" not in response.content.decode()
    assert "Trigger a workflow" not in response.content.decode()
    act(viewer, "cancel_selected", execution)
    assert Execution.objects.get(id=execution.id).status == "running"
    assert viewer.get(TRIGGER).status_code == 403


def test_a_user_with_the_change_permission_can_act():
    operator = staff_client("view_execution", "change_execution")
    execution = make_execution()
    act(operator, "cancel_selected", execution)
    assert Execution.objects.get(id=execution.id).status == "cancelled"
    assert operator.get(TRIGGER).status_code == 200


# --- trigger view -----------------------------------------------------------------------------


def test_the_admin_needs_a_login(client):
    for url in (CHANGELIST, TRIGGER):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_the_changelist_links_to_the_trigger_view(admin_client):
    assert f'href="{TRIGGER}"' in admin_client.get(CHANGELIST).content.decode()


def test_the_trigger_view_offers_the_bindings(admin_client):
    response = admin_client.get(TRIGGER)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<option value="DATA_FLOW">DATA_FLOW (data_processing)</option>' in html
    assert '<option value="FLAKY">FLAKY (flaky)</option>' in html


@pytest.mark.parametrize(
    ("text", "input"),
    [
        ('{"action": "double", "value": 21}', {"action": "double", "value": 21}),
        ("", None),
        ("  [1, 2]\n", [1, 2]),
    ],
)
def test_triggering_redirects_to_the_new_execution(admin_client, text, input):
    response = admin_client.post(TRIGGER, {"binding": "DATA_FLOW", "input": text})
    execution = Execution.objects.get()
    assert response.status_code == 302
    assert response["Location"] == change_url(execution)
    assert (execution.binding, execution.input, execution.status) == ("DATA_FLOW", input, "running")
    page = admin_client.get(response["Location"])
    assert f'Started <a href="{change_url(execution)}">' in " ".join(messages_of(page))


@pytest.mark.parametrize(
    ("data", "field", "error"),
    [
        (
            {"binding": "DATA_FLOW", "input": "{action: double}"},
            "input",
            "Enter a JSON document: the input is not valid JSON (Expecting property name "
            "enclosed in double quotes at line 1 column 2).",
        ),
        (
            {"binding": "DATA_FLOW", "input": "NaN"},
            "input",
            "Enter a JSON document: the input is not valid JSON (NaN is not a JSON value).",
        ),
        (
            {"binding": "GHOST", "input": "{}"},
            "binding",
            "Select a valid choice. GHOST is not one of the available choices.",
        ),
        ({"input": "{}"}, "binding", "This field is required."),
        (
            {"binding": "DATA_FLOW", "input": json.dumps("x" * 200)},
            "input",
            "the workflow input is 202 bytes, over the 100-byte limit (PLOY_MAX_PAYLOAD_BYTES): "
            "store large data elsewhere and pass a reference",
        ),
    ],
)
def test_a_bad_trigger_form_shows_a_clear_error_and_creates_nothing(
    admin_client, settings, data, field, error
):
    settings.PLOY_MAX_PAYLOAD_BYTES = 100
    response = admin_client.post(TRIGGER, data)
    assert response.status_code == 200
    assert response.context["form"].errors[field] == [error]
    assert Execution.objects.count() == 0


# --- workers ------------------------------------------------------------------------------------


def test_workers_are_listed_read_only_and_filtered_by_status(admin_client):
    alive = make_worker("alive", started=10)
    dead = make_worker("dead", status=WorkerStatus.DEAD, seen=600, started=900)

    def listed(query: str) -> list[str]:
        response = admin_client.get("/admin/engine/worker/" + query)
        assert response.status_code == 200
        return [worker.id for worker in response.context["cl"].result_list]

    assert listed("") == [alive.id, dead.id]  # newest first
    assert listed("?status__exact=dead") == [dead.id]
    assert listed("?q=host-alive") == [alive.id]
    page = admin_client.get(reverse("admin:engine_worker_change", args=[quote(alive.id)]))
    html = page.content.decode()
    assert page.status_code == 200
    assert alive.id in html and "host-alive" in html
    assert 'name="_save"' not in html, "read-only: nothing to save"
    assert f'href="/workers/#worker-{alive.id}"' in html, "view on site: the Workers page"
    assert admin_client.get("/admin/engine/worker/add/").status_code == 403
    delete = reverse("admin:engine_worker_delete", args=[quote(alive.id)])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403


def test_each_attempt_shows_the_worker_that_ran_it(admin_client):
    execution = make_execution(steps=[{"name": "validate", "attempts": [{"status": "completed"}]}])
    step = execution.steps.get()
    attempt = step.attempts.get()
    Attempt.objects.filter(id=attempt.id).update(worker="host-a:11:0123abcd")

    for url in (
        reverse("admin:engine_attempt_change", args=[attempt.id]),
        reverse("admin:engine_step_change", args=[step.id]),  # the attempts inline
        "/admin/engine/attempt/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200
        assert "host-a:11:0123abcd" in response.content.decode(), url
    found = admin_client.get("/admin/engine/attempt/", {"q": "host-a:11"})
    assert [row.id for row in found.context["cl"].result_list] == [attempt.id]


# --- parents, children and events ---------------------------------------------------------------


def make_child(parent: Execution, step: str = "many", index: int = 0) -> Execution:
    child = make_execution("double", binding="DOUBLE")
    children = Execution.objects.filter(id=child.id)
    children.update(parent=parent, parent_step=step, parent_index=index)
    return Execution.objects.get(id=child.id)


def test_the_changelist_filters_by_parent(admin_client):
    parent = make_execution("parent", binding="PARENT")
    first, second = make_child(parent, index=0), make_child(parent, index=1)
    other = make_child(make_execution("parent", binding="PARENT"))

    def listed(query: str) -> set[str]:
        response = admin_client.get(CHANGELIST + query)
        assert response.status_code == 200, query
        return {str(e.id) for e in response.context["cl"].result_list}

    assert listed(f"?parent__id__exact={parent.id}") == {str(first.id), str(second.id)}
    assert listed("?has_parent=yes") == {str(first.id), str(second.id), str(other.id)}
    assert listed("?has_parent=no") == {str(parent.id), str(other.parent_id)}
    assert listed(f"?has_parent=yes&parent__id__exact={parent.id}&status__exact=running") == {
        str(first.id),
        str(second.id),
    }
    html = admin_client.get(CHANGELIST).content.decode()
    assert "By parent" in html and "has a parent" in html and "top-level" in html


def test_the_execution_page_links_its_parent_and_its_children(admin_client):
    parent = make_execution("parent", binding="PARENT")
    child = make_child(parent, step="many", index=3)
    make_child(parent, index=4)

    parent_page = admin_client.get(change_url(parent)).content.decode()
    child_page = admin_client.get(change_url(child)).content.decode()

    assert f'href="{CHANGELIST}?parent__id__exact={parent.id}">2 child executions</a>' in (
        parent_page
    )
    assert "- (top-level)" in parent_page
    assert f'<a href="{change_url(parent)}">{parent.id}</a> (step many #3)' in child_page


def test_events_are_listed_read_only_and_inline_on_their_execution(admin_client):
    from engine.models import Event, Step

    execution = make_execution("approval", binding="APPROVAL")
    step = Step.objects.create(
        execution=execution,
        name="approval",
        position=0,
        status="completed",
        event_type="approval",
        started_at=execution.created_at,
    )
    received = Event.objects.create(
        execution=execution,
        type="approval",
        payload={"by": "<b>ann</b>"},
        created_at=execution.created_at,
        consumed_by=step,
        consumed_at=execution.created_at,
    )
    kept = Event.objects.create(execution=execution, type="note", created_at=execution.created_at)

    listing = admin_client.get("/admin/engine/event/")
    event_page = admin_client.get(reverse("admin:engine_event_change", args=[received.id]))
    execution_page = admin_client.get(change_url(execution)).content.decode()
    step_link = reverse("admin:engine_step_change", args=[step.id])

    assert listing.status_code == 200
    assert [e.id for e in listing.context["cl"].result_list] == [kept.id, received.id]
    assert [
        e.id for e in admin_client.get("/admin/engine/event/?type=note").context["cl"].result_list
    ] == [kept.id]
    html = event_page.content.decode()
    assert event_page.status_code == 200 and 'name="_save"' not in html
    assert "&lt;b&gt;ann&lt;/b&gt;" in html and "<b>ann</b>" not in html
    assert f'<a href="{step_link}">approval</a>' in html
    assert "Events" in execution_page and f'<a href="{step_link}">approval</a>' in execution_page
    assert "kept until a step waits for its type" in execution_page
    assert admin_client.get("/admin/engine/event/add/").status_code == 403
    delete = reverse("admin:engine_event_delete", args=[received.id])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert Event.objects.count() == 2


def test_a_step_page_names_what_it_waited_for(admin_client):
    from engine.models import Step

    parent = make_execution("parent", binding="PARENT")
    child = make_child(parent, step="one")
    one = Step.objects.create(
        execution=parent, name="one", position=0, status="waiting", child=child,
        input={"binding": "DOUBLE", "input": None}, started_at=parent.created_at,
    )  # fmt: skip
    many = Step.objects.create(
        execution=parent, name="many", position=1, status="waiting",
        input={"binding": "DOUBLE", "children": 2}, started_at=parent.created_at,
    )  # fmt: skip

    one_page = admin_client.get(reverse("admin:engine_step_change", args=[one.id])).content
    many_page = admin_client.get(reverse("admin:engine_step_change", args=[many.id])).content

    assert f'<a href="{change_url(child)}">{child.id}</a>' in one_page.decode()
    assert f"?parent__id__exact={parent.id}" in many_page.decode()
