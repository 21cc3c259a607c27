"""The dashboard's "Rerun from here" on an execution's steps and its "Cancel all matching" /
"Rerun all matching" on the list, through the Django test client, with the access rules."""

from __future__ import annotations

import html as html_lib
import json
import re

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from engine.models import Execution, Step
from tests.test_access import client_as, deployed  # noqa: F401 - a fixture
from tests.test_dashboard import LIST, completed_example, detail_url, make_execution, make_step

pytestmark = pytest.mark.django_db

RERUN_FROM = re.compile(r'<input type="hidden" name="from_step" value="([^"]+)">')


def rerun_from_steps(page: str) -> list[str]:
    return [html_lib.unescape(name) for name in RERUN_FROM.findall(page)]


# --- "Rerun from here" -----------------------------------------------------------------------


def test_each_step_that_ended_offers_rerun_from_here_with_a_confirmation(client: Client):
    execution = completed_example()
    page = client.get(detail_url(execution)).content.decode()
    assert rerun_from_steps(page) == ["validate", "process", "store"]
    assert page.count(">Rerun from here</button>") == 3
    assert (
        "from step store, with the same input? The 2 steps before it are reused as stored: their "
        "functions do not run again."
    ) in page
    assert "from step validate, with the same input? Nothing is reused" in page
    assert page.count(f'hx-post="{reverse("dashboard:rerun", args=[execution.id])}"') == 4


def test_no_rerun_from_a_step_still_running_nor_from_a_parallel_branch(client: Client):
    execution = make_execution(status="running", finished=None)
    make_step(execution, "fetch")
    group = make_step(execution, "fan", input={"branches": ["a"]}, attempts=[])
    branch = make_step(execution, "fan[a]")
    Step.objects.filter(id=branch.id).update(branch_of="fan")
    make_step(execution, "publish", status="running", finished=None)
    assert group.status == "completed"
    page = client.get(detail_url(execution)).content.decode()
    assert rerun_from_steps(page) == ["fetch", "fan"]


def test_rerun_from_here_starts_a_fork_that_shows_where_its_steps_ran(client: Client):
    execution = completed_example()
    response = client.post(reverse("dashboard:rerun", args=[execution.id]), {"from_step": "store"})
    fork = Execution.objects.exclude(id=execution.id).get()
    assert response["Location"] == detail_url(fork)
    assert (fork.rerun_of_id, fork.from_step, fork.input) == (
        execution.id,
        "store",
        execution.input,
    )
    assert list(fork.steps.values_list("name", "reused_from")) == [
        ("validate", execution.id),
        ("process", execution.id),
    ]
    page = client.get(detail_url(fork)).content.decode()
    assert (
        "Rerun started with the same input from step &#x27;store&#x27;, reusing the steps" in page
    )
    assert page.count(f'reused from <a class="code" href="{detail_url(execution)}">') == 2


def test_rerun_from_here_through_htmx_opens_the_fork(client: Client):
    execution = completed_example()
    response = client.post(
        reverse("dashboard:rerun", args=[execution.id]),
        {"from_step": "process"},
        headers={"HX-Request": "true"},
    )
    fork = Execution.objects.exclude(id=execution.id).get()
    assert json.loads(response["HX-Location"])["path"] == detail_url(fork)


def test_rerun_from_a_step_that_names_none_says_why_and_starts_nothing(client: Client):
    execution = completed_example()
    response = client.post(
        reverse("dashboard:rerun", args=[execution.id]), {"from_step": "ghost"}, follow=True
    )
    assert response.redirect_chain[-1][0] == detail_url(execution)
    assert "Could not rerun: execution" in response.content.decode()
    assert "has no step &#x27;ghost&#x27;" in response.content.decode()
    assert Execution.objects.count() == 1


@pytest.mark.usefixtures("deployed")
def test_viewers_see_no_rerun_from_here_and_cannot_post_one():
    execution = completed_example()
    viewer = client_as("viewer")
    assert rerun_from_steps(viewer.get(detail_url(execution)).content.decode()) == []
    refused = viewer.post(reverse("dashboard:rerun", args=[execution.id]), {"from_step": "store"})
    assert refused.status_code == 403 and Execution.objects.count() == 1
    operator = client_as("operator")
    page = operator.get(detail_url(execution)).content.decode()
    assert rerun_from_steps(page) == ["validate", "process", "store"]


# --- bulk actions on the list ----------------------------------------------------------------


def add(count: int, **fields: object) -> list[Execution]:
    return [make_execution(**fields) for _ in range(count)]


def test_the_list_links_both_bulk_actions_with_its_current_filter(client: Client):
    add(2, status="running", finished=None)
    page = client.get(LIST + "?workflow=data_processing&status=running").content.decode()
    query = "?workflow=data_processing&amp;status=running"
    assert f'href="{reverse("dashboard:confirm_bulk", args=["cancel"])}{query}"' in page
    assert f'hx-get="{reverse("dashboard:confirm_bulk", args=["rerun"])}{query}"' in page


def test_the_confirmation_names_the_count_for_the_filter(client: Client):
    add(3, status="running", finished=None)
    add(2, status="completed")
    add(4, status="running", finished=None, workflow="flaky", binding="FLAKY")
    url = reverse("dashboard:confirm_bulk", args=["cancel"]) + "?workflow=data_processing"
    fragment = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in fragment and '<dialog open class="card bulk-confirm"' in fragment
    assert "Cancel <strong>3</strong> running executions of workflow data_processing?" in fragment
    assert '<input type="hidden" name="workflow" value="data_processing">' in fragment
    assert ">Cancel 3 executions</button>" in fragment and ">Keep them</button>" in fragment
    rerun = reverse("dashboard:confirm_bulk", args=["rerun"]) + "?status=completed"
    page = client.get(rerun).content.decode()
    assert "<html" in page and "Back to the list" in page
    assert "Rerun <strong>2</strong> executions with status completed?" in page


def test_the_confirmation_says_when_nothing_matches_or_the_filter_is_wrong(client: Client):
    add(1, status="completed")
    url = reverse("dashboard:confirm_bulk", args=["cancel"])
    empty = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "No running execution of every workflow (no filter): nothing to cancel." in empty
    assert "bulk-confirm-button" not in empty
    bad = client.get(url + "?q=zz", headers={"HX-Request": "true"}).content.decode()
    assert "is not (the start of) an execution id" in bad
    assert client.get(reverse("dashboard:confirm_bulk", args=["delete"])).status_code == 404


def test_cancel_all_matching_cancels_them_and_returns_to_the_filtered_list(client: Client):
    running = add(3, status="running", finished=None)
    other = add(2, status="running", finished=None, workflow="flaky", binding="FLAKY")
    response = client.post(
        reverse("dashboard:run_bulk", args=["cancel"]), {"workflow": "data_processing"}
    )
    assert response["Location"] == LIST + "?workflow=data_processing"
    assert {e.status for e in Execution.objects.filter(id__in=[e.id for e in running])} == {
        "cancelled"
    }
    assert {e.status for e in Execution.objects.filter(id__in=[e.id for e in other])} == {"running"}
    page = client.get(response["Location"]).content.decode()
    assert "Cancelled 3 executions." in page


def test_rerun_all_matching_through_htmx_reruns_them(client: Client):
    failed = [make_execution(status="failed", input={"index": index}) for index in range(2)]
    response = client.post(
        reverse("dashboard:run_bulk", args=["rerun"]),
        {"status": "failed"},
        headers={"HX-Request": "true"},
    )
    assert json.loads(response["HX-Location"])["path"] == LIST + "?status=failed"
    reruns = Execution.objects.filter(rerun_of__in=failed)
    assert reruns.count() == 2 and {each.status for each in reruns} == {"running"}
    assert {(each.rerun_of_id, each.input["index"]) for each in reruns} == {
        (original.id, original.input["index"]) for original in failed
    }


@pytest.mark.usefixtures("deployed")
def test_viewers_get_no_bulk_links_and_no_bulk_action():
    add(2, status="running", finished=None)
    viewer = client_as("viewer")
    assert "Cancel all matching" not in viewer.get(LIST).content.decode()
    assert viewer.get(reverse("dashboard:confirm_bulk", args=["cancel"])).status_code == 403
    refused = viewer.post(reverse("dashboard:run_bulk", args=["cancel"]), {})
    assert refused.status_code == 403 and Execution.objects.running().count() == 2
    operator = client_as("operator")
    assert "Cancel all matching" in operator.get(LIST).content.decode()
    assert operator.post(reverse("dashboard:run_bulk", args=["cancel"]), {}).status_code == 302
    assert Execution.objects.running().count() == 0


# --- the admin -------------------------------------------------------------------------------


def admin_rerun_from_url(execution: Execution) -> str:
    return reverse("admin:engine_execution_rerun_from", args=[execution.id])


def test_the_admin_links_rerun_from_here_on_each_step_that_can_start_one(admin_client):
    execution = completed_example()
    page = admin_client.get(reverse("admin:engine_execution_change", args=[execution.id]))
    html = page.content.decode()
    for name in ("validate", "process", "store"):
        assert (
            f'<a href="{admin_rerun_from_url(execution)}?step={name}">Rerun from here</a>' in html
        )


def test_the_admin_reruns_from_the_chosen_step(admin_client):
    execution = completed_example()
    form = admin_client.get(admin_rerun_from_url(execution) + "?step=process")
    assert form.status_code == 200
    html = form.content.decode()
    assert '<option value="process" selected>process</option>' in html
    response = admin_client.post(admin_rerun_from_url(execution), {"from_step": "process"})
    fork = Execution.objects.exclude(id=execution.id).get()
    assert response["Location"] == reverse("admin:engine_execution_change", args=[fork.id])
    assert (fork.from_step, list(fork.steps.values_list("name", flat=True))) == (
        "process",
        ["validate"],
    )
    page = admin_client.get(response["Location"]).content.decode()
    assert f"Rerun of {execution.id} from step process started as {fork.id}." in page
    assert f'<a href="{reverse("admin:engine_execution_change", args=[execution.id])}">' in page


def test_the_admin_refuses_a_step_it_did_not_offer_and_needs_the_permission(admin_client):
    execution = completed_example()
    refused = admin_client.post(admin_rerun_from_url(execution), {"from_step": "ghost"})
    assert refused.status_code == 200 and "Select a valid choice" in refused.content.decode()
    assert Execution.objects.count() == 1
    missing = reverse("admin:engine_execution_rerun_from", args=["not-an-id"])
    assert admin_client.get(missing).status_code == 404
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_execution"))
    client = Client()
    client.force_login(viewer)
    assert client.post(admin_rerun_from_url(execution), {"from_step": "store"}).status_code == 403
    assert Execution.objects.count() == 1


def test_past_the_list_limit_the_admin_takes_a_typed_step_name(admin_client, monkeypatch):
    from engine import admin_reruns

    monkeypatch.setattr(admin_reruns, "CHOICES_SHOWN", 2)  # the example's 3 steps go past it
    execution = completed_example()
    form = admin_client.get(admin_rerun_from_url(execution) + "?step=process").content.decode()
    assert "<option" not in form
    assert 'name="from_step" value="process"' in form
    refused = admin_client.post(admin_rerun_from_url(execution), {"from_step": "ghost"})
    assert "&#x27;ghost&#x27; is not a step a rerun can start from" in refused.content.decode()
    assert Execution.objects.count() == 1
    response = admin_client.post(admin_rerun_from_url(execution), {"from_step": "store"})
    fork = Execution.objects.exclude(id=execution.id).get()
    assert response["Location"] == reverse("admin:engine_execution_change", args=[fork.id])
    assert fork.from_step == "store"
