"""Dashboard access: open on a local set-up; behind a staff login, with the admin's permission to
act, once DJANGO_ALLOWED_HOSTS names another host."""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import URLPattern, reverse
from django.urls.converters import IntConverter
from uuid6 import uuid7

from dashboard import access
from dashboard import urls as dashboard_urls
from engine.admin import RUN_PERMISSION
from engine.models import Execution
from tests.conftest import ROOT, wait_for, worker_environment
from tests.test_dashboard import detail_url, make_execution

pytestmark = pytest.mark.django_db

HOST = "ploy.example.com"
LOGIN = reverse("admin:login")
LIST = reverse("dashboard:execution_list")
TRIGGER = reverse("dashboard:trigger")
TRIGGER_DATA = {"binding": "DATA_FLOW", "input": '{"action": "double", "value": 21}'}


@pytest.fixture
def deployed(settings) -> None:
    """What settings derive from DJANGO_ALLOWED_HOSTS=ploy.example.com."""
    settings.ALLOWED_HOSTS = [HOST]
    settings.DASHBOARD_REQUIRES_LOGIN = True


def client_as(kind: str) -> Client:
    """A browser on the deployed host: anonymous, or logged in as a user of this kind."""
    client = Client(HTTP_HOST=HOST)
    if kind == "anonymous":
        return client
    user = User.objects.create_user(
        kind,
        password="pw",
        is_staff=kind != "non-staff",
        is_superuser=kind == "superuser",
    )
    if kind == "operator":
        user.user_permissions.set(Permission.objects.filter(codename="change_execution"))
    elif kind in {"viewer", "non-staff"}:
        user.user_permissions.set(Permission.objects.filter(codename="view_execution"))
    client.force_login(user)
    return client


def dashboard_urls_of(execution_id: str) -> list[str]:
    """Every URL of the dashboard's URL conf, so a page added later is checked too."""
    urls = []
    for pattern in dashboard_urls.urlpatterns:
        assert isinstance(pattern, URLPattern), "an include() here needs its own check"
        arguments = {  # a step number where the URL takes a number, the execution's id else
            name: "1" if isinstance(converter, IntConverter) else execution_id
            for name, converter in pattern.pattern.converters.items()
        }
        urls.append(reverse(f"dashboard:{pattern.name}", kwargs=arguments))
    return urls


def login_target(response) -> str:
    """The `next` of a redirect to the admin's login page."""
    location = urlsplit(response.get("HX-Redirect") or response["Location"])
    assert location.path == LOGIN
    return parse_qs(location.query)["next"][0]


def htmx_headers(current: str, target: str = "live") -> dict[str, str]:
    return {"HX-Request": "true", "HX-Target": target, "HX-Current-URL": f"http://{HOST}{current}"}


# --- the decision ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hosts", "requires_login"),
    [
        (None, False),
        ("", False),
        ("localhost,127.0.0.1,[::1]", False),
        ("localhost, 127.0.0.1 ,", False),
        ("LocalHost", False),
        ("ploy.example.com", True),
        ("localhost,ploy.example.com", True),
        ("10.0.0.5", True),
        (".localhost", True),
        ("*", True),
    ],
)
def test_settings_require_a_login_once_allowed_hosts_name_another_host(
    monkeypatch: pytest.MonkeyPatch, hosts: str | None, requires_login: bool
) -> None:
    if hosts is None:
        monkeypatch.delenv("DJANGO_ALLOWED_HOSTS", raising=False)
    else:
        monkeypatch.setenv("DJANGO_ALLOWED_HOSTS", hosts)

    values = runpy.run_path(str(ROOT / "ployweb" / "settings.py"))

    assert values["DASHBOARD_REQUIRES_LOGIN"] is requires_login
    assert "" not in values["ALLOWED_HOSTS"]


def test_the_test_settings_are_a_local_set_up(settings) -> None:
    assert settings.DASHBOARD_REQUIRES_LOGIN is False


# --- a local set-up: open ---------------------------------------------------------------------


def test_a_local_set_up_is_open_to_anyone(client: Client) -> None:
    execution = make_execution(status="running", finished=None)

    pages = [client.get(url) for url in (LIST, detail_url(execution), "/workflows/")]
    cancelled = client.post(reverse("dashboard:cancel", args=[execution.id]))

    assert [page.status_code for page in pages] == [200, 200, 200]
    assert 'id="trigger-form"' in pages[0].content.decode()
    assert "Log out" not in pages[0].content.decode()
    assert cancelled.status_code == 302
    assert Execution.objects.get(id=execution.id).status == "cancelled"


# --- deployed: who may look -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["anonymous", "non-staff"])
def test_every_dashboard_url_sends_a_stranger_to_the_admin_login(deployed, kind: str) -> None:
    client = client_as(kind)
    execution = make_execution(status="running", finished=None)

    for url in dashboard_urls_of(str(execution.id)):
        read = client.get(url)
        act = client.post(url, TRIGGER_DATA)
        assert (read.status_code, act.status_code) == (302, 302), url
        assert login_target(read) == url
        assert login_target(act) == LIST, "after logging in, never back to a POST-only URL"
    assert Execution.objects.count() == 1
    assert Execution.objects.get().status == "running"


def test_the_login_page_brings_the_user_back_to_the_page_asked_for(deployed) -> None:
    execution = make_execution()
    User.objects.create_user("ops", password="pw", is_staff=True)
    client = Client(HTTP_HOST=HOST)
    wanted = f"{detail_url(execution)}?full=1"

    asked = client.get(wanted)
    login_page = client.get(asked["Location"])
    logged_in = client.post(
        asked["Location"], {"username": "ops", "password": "pw", "next": login_target(asked)}
    )

    assert login_target(asked) == wanted
    assert login_page.status_code == 200
    assert logged_in.status_code == 302 and logged_in["Location"] == wanted
    assert client.get(wanted).status_code == 200


def test_an_unknown_execution_asks_for_a_login_before_saying_it_does_not_exist(deployed) -> None:
    response = client_as("anonymous").get(detail_url(str(uuid7())))

    assert response.status_code == 302
    assert b"No execution with this id" not in response.content


def test_htmx_requests_make_the_whole_tab_go_to_the_login(deployed) -> None:
    client = client_as("anonymous")
    execution = make_execution(status="running", finished=None)
    page = detail_url(execution)

    poll = client.get(f"{page}?v=abc", headers=htmx_headers(page))
    cancel = client.post(
        reverse("dashboard:cancel", args=[execution.id]), headers=htmx_headers(page)
    )
    listing = client.get(f"{LIST}?status=running", headers=htmx_headers("/?status=running", "x"))

    for response in (poll, cancel):
        assert response.status_code == 200
        assert "Location" not in response
        assert response.content == b""
        assert login_target(response) == page
    assert login_target(listing) == "/?status=running"
    assert Execution.objects.get(id=execution.id).status == "running"


def test_an_htmx_request_from_another_site_comes_back_to_the_list(deployed) -> None:
    response = client_as("anonymous").post(
        TRIGGER, TRIGGER_DATA, headers={"HX-Request": "true", "HX-Current-URL": "https://evil/"}
    )

    assert login_target(response) == LIST
    assert not Execution.objects.exists()


@pytest.mark.parametrize("kind", ["viewer", "operator", "superuser"])
def test_staff_users_see_every_page(deployed, kind: str) -> None:
    client = client_as(kind)
    execution = make_execution(status="running", finished=None)

    pages = [client.get(url) for url in (LIST, detail_url(execution), "/workflows/")]
    poll = client.get(LIST, headers=htmx_headers(LIST, "executions"))

    assert [page.status_code for page in pages] == [200, 200, 200]
    assert poll.status_code == 200 and 'id="executions"' in poll.content.decode()
    html = pages[0].content.decode()
    assert f'<span class="muted">{kind}</span>' in html
    assert f'action="{reverse("admin:logout")}"' in html


# --- deployed: who may act --------------------------------------------------------------------


def test_a_staff_user_without_the_permission_sees_no_action(deployed) -> None:
    client = client_as("viewer")
    running = make_execution(status="running", finished=None)
    ended = make_execution()

    listing = client.get(LIST).content.decode()
    running_page = client.get(detail_url(running)).content.decode()
    ended_page = client.get(detail_url(ended)).content.decode()
    workflows = client.get("/workflows/").content.decode()

    assert 'id="trigger-form"' not in listing
    assert 'Triggering needs the "Can change execution" permission' in listing
    assert reverse("dashboard:cancel", args=[running.id]) not in running_page
    assert reverse("dashboard:rerun", args=[ended.id]) not in ended_page
    assert "Edit input &amp; run" not in ended_page
    assert "?trigger=" not in workflows


@pytest.mark.parametrize("htmx", [False, True])
def test_a_staff_user_without_the_permission_is_refused_every_action(deployed, htmx) -> None:
    client = client_as("viewer")
    running = make_execution(status="running", finished=None)
    ended = make_execution()
    headers = htmx_headers(detail_url(running)) if htmx else {}

    answers = [
        client.post(TRIGGER, TRIGGER_DATA, headers=headers),
        client.post(reverse("dashboard:cancel", args=[running.id]), headers=headers),
        client.post(reverse("dashboard:rerun", args=[ended.id]), headers=headers),
    ]

    for response in answers:
        assert response.status_code == 403
        assert "needs the <code>engine.change_execution</code> permission" in (
            response.content.decode()
        )
        assert "Nothing was changed." in response.content.decode()
        if htmx:
            assert (response["HX-Retarget"], response["HX-Reselect"]) == ("#main", "#main")
            assert response["HX-Reswap"] == "outerHTML"
    assert Execution.objects.count() == 2
    assert Execution.objects.get(id=running.id).status == "running"


@pytest.mark.parametrize("kind", ["operator", "superuser"])
def test_the_admins_run_permission_lets_a_user_act(deployed, kind: str) -> None:
    client = client_as(kind)
    running = make_execution(status="running", finished=None)
    ended = make_execution(input={"n": 1})

    page = client.get(detail_url(running)).content.decode()
    triggered = client.post(TRIGGER, TRIGGER_DATA)
    cancelled = client.post(reverse("dashboard:cancel", args=[running.id]))
    rerun = client.post(reverse("dashboard:rerun", args=[ended.id]), headers=htmx_headers("/"))

    assert reverse("dashboard:cancel", args=[running.id]) in page
    assert triggered.status_code == 302
    assert Execution.objects.filter(input={"action": "double", "value": 21}).exists()
    assert cancelled.status_code == 302
    assert Execution.objects.get(id=running.id).status == "cancelled"
    assert rerun.status_code == 200 and "HX-Location" in rerun
    assert Execution.objects.filter(rerun_of=ended).exists()


def test_the_dashboard_asks_for_the_same_permission_as_the_admin() -> None:
    assert access.RUN_PERMISSION == RUN_PERMISSION == "engine.change_execution"


def test_a_logged_out_staff_user_is_sent_back_to_the_dashboard(deployed) -> None:
    client = client_as("viewer")

    response = client.post(reverse("admin:logout"), {"next": LIST})

    assert response.status_code == 302 and response["Location"] == LIST
    assert login_target(client.get(LIST)) == LIST


# --- manage.py serve says which it is ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Start `manage.py serve` with some environment; its whole process group ends in teardown."""
    processes: list[subprocess.Popen] = []

    def start(**environment: str) -> Path:
        log = tmp_path / f"serve-{len(processes)}.log"
        with open(log, "w") as output:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "serve", "--port", str(free_port())],
                    cwd=ROOT,
                    env=worker_environment(PYTHONUNBUFFERED="1", **environment),
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        return log

    yield start
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # serve, and the worker it started
        try:
            wait_for(lambda process=process: group_ended(process), timeout=15)
        except AssertionError:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def group_ended(process: subprocess.Popen) -> bool:
    """Serve has exited, and so has everything in its process group (serve reaps its worker)."""
    if process.poll() is None:
        return False
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("hosts", "line"),
    [
        ("localhost,127.0.0.1", "the dashboard is open to anyone who reaches it"),
        (
            f"localhost,{HOST}",
            f"the dashboard is login-protected (DJANGO_ALLOWED_HOSTS: localhost, {HOST})",
        ),
    ],
    ids=["local", "deployed"],
)
def test_serve_says_at_start_whether_the_dashboard_is_open(serve, hosts: str, line: str) -> None:
    log = serve(DJANGO_ALLOWED_HOSTS=hosts)

    wait_for(lambda: "ployweb: the dashboard is" in log.read_text(), timeout=60)

    assert f"ployweb: {line}" in log.read_text()


@pytest.mark.parametrize(
    ("requires_login", "words"),
    [(False, "open to anyone who reaches it"), (True, "acting needs engine.change_execution")],
)
def test_describe_names_the_mode_and_the_way_to_change_it(settings, requires_login, words):
    settings.DASHBOARD_REQUIRES_LOGIN = requires_login

    assert words in access.describe()
