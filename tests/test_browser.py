"""The dashboard in real headless Chromium, against a live server and a real worker.

Needs /usr/bin/chromium (Playwright's own browser download is not used). Without it the tests
are skipped, except on CI (CI=true), which installs it: there they fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; the test's own ORM calls are safe.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

from django.contrib.auth.models import Permission, User  # noqa: E402
from django.utils import timezone  # noqa: E402

from engine import runtime  # noqa: E402
from engine.models import Event, Execution  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000

if not CHROMIUM.exists():
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: CI must install chromium", pytrace=False)
    pytest.skip(
        f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests",
        allow_module_level=True,
    )

from playwright.sync_api import (  # noqa: E402
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Request,
    expect,
    sync_playwright,
)  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, live_server) -> Iterator[Page]:
    """A fresh page; closed before the live server's database is flushed."""
    context = browser.new_context(
        base_url=live_server.url,
        viewport={"width": 1360, "height": 900},
        timezone_id="Europe/Paris",
    )
    context.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.extend(console_errors(message)))
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


def console_errors(message: ConsoleMessage) -> list[str]:
    """Errors the page logs; a 404 or 422 answer that the page shows on purpose is not one."""
    if message.type != "error" or message.text.startswith("Failed to load resource"):
        return []
    return [message.text]


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def mark_document(page: Page) -> None:
    """A marker on window: still there later means the page was never reloaded."""
    page.evaluate("window.__notReloaded = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"


def tip_of(bar: Locator) -> str:
    """The text of a timeline bar's hover box, empty while it is hidden."""
    return bar.evaluate("bar => getComputedStyle(bar, '::after').content")


def test_trigger_the_example_from_the_form_and_watch_it_complete(
    page: Page, start_worker: Callable
) -> None:
    start_worker()
    page.goto("/")
    expect(page.get_by_role("heading", name="Executions")).to_be_visible()
    expect(page.locator("#executions")).to_contain_text("No executions yet")
    screenshot(page, "01-list-empty")
    mark_document(page)

    page.locator("#trigger-form").get_by_label("Workflow").select_option("DATA_FLOW")
    page.get_by_label("Input (JSON)").fill("{not json")
    page.get_by_role("button", name="Trigger").click()
    expect(page.locator("#trigger-form")).to_contain_text("Not valid JSON")
    screenshot(page, "02-trigger-error")
    page.get_by_label("Input (JSON)").fill('{"action": "double", "value": 21}')
    page.get_by_role("button", name="Trigger").click()

    # The form opens the new execution, and the page follows it live to its end.
    expect(page).to_have_url(re.compile(r"/executions/[0-9a-f-]{36}/$"))
    expect(page.locator("#execution-status")).to_have_text("completed")
    expect(page).to_have_title("data_processing completed · ployweb")
    assert_not_reloaded(page)
    for name in ("validate", "process", "store"):
        expect(page.locator(".step-name", has_text=name)).to_be_visible()
    expect(page.locator(".step")).to_have_count(3)
    expect(page.locator("#execution-output")).to_contain_text('"processedValue": 42')
    expect(page.locator("#step-2-input")).to_contain_text('"value": 21')
    expect(page.locator(".timeline .tl-bar.bar-completed")).to_have_count(4)  # 3 steps + run
    expect(page.locator("time.utc").first).to_be_visible()
    expect(page.locator(".local-time").first).to_contain_text("(local)")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.locator("#execution-output").get_by_role("button", name="Copy").click()
    expect(page.locator("#execution-output").get_by_role("button", name="Copied")).to_be_visible()
    assert '"processedValue": 42' in page.evaluate("navigator.clipboard.readText()")
    screenshot(page, "03-execution-completed")

    page.get_by_role("link", name="Executions", exact=True).first.click()
    row = page.locator("#executions tbody tr").first
    expect(row).to_contain_text("data_processing")
    expect(row).to_contain_text("completed")
    expect(row).to_contain_text("3/3")
    screenshot(page, "04-list")


def test_the_list_follows_executions_live(page: Page, start_worker: Callable) -> None:
    start_worker()
    page.goto("/")
    mark_document(page)

    execution_id = runtime.trigger("SLEEPER", {"ms": 4000}).execution_id

    row = page.locator("#executions tbody tr", has_text=execution_id)
    expect(row.locator(".badge")).to_have_text("running")
    expect(row.locator(".badge")).to_have_text("completed")
    expect(row).to_contain_text("3/3")
    expect(page.locator("#counters .counter-completed strong")).to_have_text("1")
    assert_not_reloaded(page)


def test_the_list_stops_polling_while_the_tab_is_hidden(page: Page) -> None:
    page.goto("/")
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if is_poll(request) else None)
    wait_for_poll(page, polls)

    page.evaluate(SET_HIDDEN, True)
    polls.clear()
    page.wait_for_timeout(4000)  # longer than the 3 s polling interval
    assert polls == []

    page.evaluate(SET_HIDDEN, False)
    wait_for_poll(page, polls)


SET_HIDDEN = """hidden => {
    Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
    document.dispatchEvent(new Event("visibilitychange"));
}"""


def is_poll(request: Request) -> bool:
    return request.headers.get("hx-target") == "executions"


def wait_for_poll(page: Page, polls: list[str]) -> None:
    count = len(polls)
    for _ in range(100):
        if len(polls) > count:
            return
        page.wait_for_timeout(100)
    raise AssertionError("the list did not poll")


def test_filters_and_search_stay_in_the_url(page: Page) -> None:
    kept = runtime.trigger("FAILING", {}).execution_id
    runtime.trigger("SLEEPER", {"ms": 1})
    page.goto("/")
    mark_document(page)

    page.locator("select[name=workflow]").select_option("failing")
    expect(page).to_have_url(re.compile(r"/\?workflow=failing$"))
    expect(page.locator("#executions tbody tr")).to_have_count(1)
    page.locator("#q").fill(kept[:13])
    expect(page).to_have_url(re.compile(rf"q={kept[:13]}"))
    expect(page.locator("#executions tbody tr")).to_contain_text(kept)
    assert_not_reloaded(page)

    page.reload()
    expect(page.locator("select[name=workflow]")).to_have_value("failing")
    expect(page.locator("#executions tbody tr")).to_have_count(1)


def test_a_failing_workflow_shows_every_failed_attempt_on_the_timeline(
    page: Page, start_worker: Callable
) -> None:
    start_worker()
    execution_id = runtime.trigger("FAILING", {}).execution_id
    page.goto(f"/executions/{execution_id}/")

    expect(page.locator("#execution-status")).to_have_text("failed")
    boom = page.locator(".step", has_text="boom")
    expect(boom.locator("tr.attempt-failed")).to_have_count(2)
    expect(page.locator(".error-panel")).to_contain_text("ZeroDivisionError")
    expect(page.locator(".tl-bar.bar-backoff")).to_have_count(1)
    failed_bars = page.locator(".tl-bar.bar-failed[data-tip*='attempt']")
    expect(failed_bars).to_have_count(2)

    # The details of a bar show on keyboard focus and on hover.
    failed_bars.first.focus()
    assert "attempt 1 of 2 · failed · ZeroDivisionError" in tip_of(failed_bars.first)
    failed_bars.last.hover(force=True)
    assert "attempt 2 of 2 · failed · ZeroDivisionError" in tip_of(failed_bars.last)
    # Enter on a bar jumps to its attempt and unfolds the traceback; a click unfolds another.
    first, second = boom.locator("tr.attempt-failed details").all()
    expect(first.locator("pre")).to_be_hidden()
    failed_bars.first.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#step-2-attempt-1$"))
    expect(first.locator("pre")).to_contain_text("Traceback (most recent call last)")
    expect(second.locator("pre")).to_be_hidden()
    second.locator("summary").click()
    expect(second.locator("pre")).to_contain_text("ZeroDivisionError: division by zero")
    screenshot(page, "05-execution-failed")


def test_cancel_a_sleeping_execution_from_its_page(page: Page, start_worker: Callable) -> None:
    start_worker()
    execution_id = runtime.trigger("SLEEPER", {"ms": 60_000}).execution_id
    page.goto(f"/executions/{execution_id}/")
    mark_document(page)

    expect(page.locator(".step", has_text="sleep:1").locator(".badge")).to_have_text("sleeping")
    expect(page.locator(".tl-bar.bar-sleep.planned")).to_have_count(1)
    screenshot(page, "06-execution-sleeping")
    page.get_by_role("button", name="Cancel").click()

    expect(page.locator("#execution-status")).to_have_text("cancelled")
    expect(page.locator(".messages")).to_contain_text("Execution cancelled.")
    expect(page.locator(".step", has_text="sleep:1").locator(".badge")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Rerun", exact=True)).to_be_visible()
    assert_not_reloaded(page)
    assert Execution.objects.get(id=execution_id).status == "cancelled"
    screenshot(page, "07-execution-cancelled")

    page.get_by_role("button", name="Rerun", exact=True).click()
    expect(page).not_to_have_url(re.compile(execution_id))
    expect(page.locator(".messages")).to_contain_text("Rerun started")
    expect(page.locator(".exec-head")).to_contain_text(f"rerun of {execution_id}")
    assert_not_reloaded(page)


def test_workflows_page_and_friendly_404(page: Page) -> None:
    runtime.trigger("DATA_FLOW", {"action": "double", "value": 2})
    page.goto("/workflows/")
    expect(page.get_by_role("heading", name="Workflows")).to_be_visible()
    expect(page.locator("tr", has_text="DATA_FLOW")).to_contain_text("data_processing")
    screenshot(page, "08-workflows")

    response = page.goto("/executions/00000000-0000-7000-8000-000000000000/")
    assert response.status == 404
    expect(page.get_by_role("heading", name="No execution with this id")).to_be_visible()
    screenshot(page, "09-not-found")


def test_dark_colour_scheme(browser: Browser, live_server, start_worker: Callable) -> None:
    start_worker()
    execution_id = runtime.trigger("FLAKY", {"failures": 1}).execution_id
    context = browser.new_context(
        base_url=live_server.url, color_scheme="dark", viewport={"width": 1360, "height": 900}
    )
    page = context.new_page()
    try:
        page.goto(f"/executions/{execution_id}/")
        expect(page.locator("#execution-status")).to_have_text("completed")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 18, 22)"
        screenshot(page, "10-execution-dark")
        page.goto("/")
        screenshot(page, "11-list-dark")
    finally:
        context.close()


def test_a_deployed_dashboard_asks_for_a_staff_login(page: Page, settings) -> None:
    """The admin's login page leads back to the page asked for; once the session is gone, the
    next poll takes the whole tab to the login page again instead of swapping it into the list."""
    settings.ALLOWED_HOSTS = ["localhost", "ploy.example.com"]
    settings.DASHBOARD_REQUIRES_LOGIN = True
    operator = User.objects.create_user("operator", password="a-long-password", is_staff=True)
    operator.user_permissions.set(Permission.objects.filter(codename="change_execution"))
    execution_id = runtime.trigger("SLEEPER", {"ms": 1}).execution_id

    page.goto(f"/executions/{execution_id}/")
    expect(page).to_have_url(re.compile(rf"/admin/login/\?next=/executions/{execution_id}/$"))
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("a-long-password")
    page.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(re.compile(rf"/executions/{execution_id}/$"))
    expect(page.locator(".topbar")).to_contain_text("operator")
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()
    page.get_by_role("link", name="Executions", exact=True).first.click()
    expect(page.locator("#trigger-form")).to_be_visible()

    page.context.clear_cookies()
    expect(page).to_have_url(re.compile(r"/admin/login/\?next=/$"))
    expect(page.get_by_role("button", name="Log in")).to_be_visible()


def test_pages_read_without_javascript(browser: Browser, live_server) -> None:
    execution_id = runtime.trigger("DATA_FLOW", {"action": "<script>x</script>", "value": 1})
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(f"/executions/{execution_id.execution_id}/")
        expect(page.locator("#execution-input")).to_contain_text('"<script>x</script>"')
        page.goto("/?workflow=data_processing")
        expect(page.locator("#executions tbody tr")).to_have_count(1)
    finally:
        context.close()


def test_the_workers_page_follows_a_live_worker(page: Page, start_worker: Callable) -> None:
    worker = start_worker()
    page.goto("/")
    page.get_by_role("link", name="Workers", exact=True).click()
    expect(page).to_have_url(re.compile(r"/workers/$"))
    mark_document(page)

    row = page.locator(f'tr[data-status="alive"]:has-text("{worker.worker_id}")')
    expect(row.locator(".badge")).to_have_text("alive")
    expect(row).to_contain_text(str(worker.pid))
    heartbeat = row.locator(".heartbeat")
    expect(heartbeat).to_have_text(re.compile(r"^\d+\.\d s ago$"))
    # Each refresh (every 2 s) shows a newer heartbeat: its time, in the cell's title, moves.
    seen = {heartbeat.get_attribute("title")}
    for _ in range(100):
        page.wait_for_timeout(100)
        seen.add(heartbeat.get_attribute("title"))
        if len(seen) > 2:
            break
    assert len(seen) > 2, f"the heartbeat did not move: {seen}"

    # What it runs now links to the execution, whose attempts name this worker.
    execution_id = runtime.trigger("SLOW", {"seconds": 5}).execution_id
    link = row.get_by_role("link", name=execution_id)
    expect(link).to_be_visible()
    assert_not_reloaded(page)
    screenshot(page, "12-workers")
    link.click()
    expect(page).to_have_url(re.compile(rf"/executions/{execution_id}/$"))
    first = page.locator(".step", has_text="first").locator(".attempt-worker a")
    expect(first).to_have_text(worker.worker_id)
    first.click()
    expect(page).to_have_url(re.compile(r"/workers/#worker-"))
    expect(page.locator("tr.worker:target")).to_contain_text(worker.worker_id)

    worker.kill()  # silent past the timeout: dead, dimmed, still listed
    dead = page.locator(f'tr[data-status="dead"]:has-text("{worker.worker_id}")')
    expect(dead).to_have_class(re.compile(r"\bdimmed\b"))


# --- waits and composition ----------------------------------------------------------------------


def test_send_an_event_to_a_waiting_execution_and_watch_it_complete(
    page: Page, start_worker: Callable
) -> None:
    start_worker()
    execution_id = runtime.trigger("APPROVAL", {"timeout_ms": 600_000}).execution_id
    page.goto(f"/executions/{execution_id}/")
    mark_document(page)
    questions: list[str] = []
    page.on("dialog", lambda dialog: questions.append(dialog.message))  # accepted by `page`

    approval = page.locator(".step", has_text="approval").first
    expect(approval.locator(".badge").first).to_have_text("waiting")
    wait = approval.locator(".wait-line")
    expect(wait).to_contain_text("Waiting for event approval since")
    expect(wait).to_contain_text("times out at")
    expect(wait.locator(".local-time")).to_have_count(2)  # since and until, in local time too
    expect(page.locator(".tl-bar.bar-wait")).to_have_count(1)
    form = page.locator("#send-event")
    expect(form.get_by_label("Event type")).to_have_value("approval")
    screenshot(page, "13-execution-waiting")

    # What is typed survives the page's own refreshes (every 5 s at the latest while running).
    form.get_by_label("Payload (JSON)").fill('{"approved": true, "by": "ann"')
    page.evaluate("document.getElementById('live').dataset.old = 'yes'")
    page.wait_for_function("!document.getElementById('live').dataset.old", timeout=10_000)
    expect(form.get_by_label("Payload (JSON)")).to_have_value('{"approved": true, "by": "ann"')

    form.get_by_role("button", name="Send event").click()
    expect(form.locator("#event-payload-error")).to_contain_text("Not valid JSON")
    assert Event.objects.count() == 0
    form.get_by_label("Payload (JSON)").fill('{"approved": true, "by": "ann"}')
    form.get_by_role("button", name="Send event").click()

    expect(page.locator("#execution-status")).to_have_text("completed")
    assert questions == ["Send the event \u201capproval\u201d to this execution?"] * 2
    expect(page.locator("#send-event")).to_have_count(0)  # nothing to send to any more
    expect(page.locator("#execution-output")).to_contain_text('"by": "ann"')
    expect(approval.locator(".wait-line")).to_contain_text("Received event approval at")
    event = page.locator("#events tbody tr")
    expect(event).to_have_count(1)
    expect(event).to_contain_text("approval")
    expect(event.locator(".consumer")).to_contain_text("approval at")
    expect(page.locator(".step", has_text="act")).to_contain_text("completed")
    assert_not_reloaded(page)
    screenshot(page, "14-execution-event-received")


def test_a_parent_page_follows_its_childrens_progress(page: Page) -> None:
    parent_id = runtime.trigger("PARENT", {"value": 1, "values": [1, 2, 3, 4, 5, 6]}).execution_id
    runtime.run_execution(parent_id)
    [one] = Execution.objects.filter(parent_id=parent_id)
    runtime.run_execution(str(one.id))
    runtime.run_execution(parent_id)
    many = list(Execution.objects.filter(parent_id=parent_id, parent_step="many").order_by("id"))
    for child in many[:4]:
        runtime.run_execution(str(child.id))

    page.goto(f"/executions/{parent_id}/")
    mark_document(page)
    progress = page.locator("#children .fan-out")
    expect(progress).to_contain_text("4/6 children done")
    expect(page.locator("#children tbody tr")).to_have_count(7)
    expect(page.locator(".step", has_text="many").locator(".wait-line")).to_contain_text(
        "Waiting for 2 of 6 children"
    )
    screenshot(page, "15-parent-fan-out")

    for child in many[4:]:  # the last children end; the parent wakes, and ends too
        runtime.run_execution(str(child.id))
    expect(progress).to_contain_text("6/6 children done")
    runtime.run_execution(parent_id)
    expect(page.locator("#execution-status")).to_have_text("completed")
    expect(page.locator("#children tbody .badge-completed")).to_have_count(7)
    assert_not_reloaded(page)

    # A child's page leads back to its parent; the parent's, to the list of its children.
    page.locator("#children tbody tr").nth(3).get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(rf"/executions/{many[2].id}/$"))
    expect(page.locator("#parent-link")).to_contain_text("started by its step many (#2)")
    page.locator("#parent-link").get_by_role("link", name=parent_id).click()
    expect(page).to_have_url(re.compile(rf"/executions/{parent_id}/$"))
    page.locator("#children").get_by_role("link", name="list them all").click()
    expect(page).to_have_url(re.compile(rf"/\?parent={parent_id}$"))
    expect(page.locator("#executions tbody tr")).to_have_count(7)
    page.locator("select[name=workflow]").select_option("parent")  # the filter stays
    expect(page).to_have_url(re.compile(rf"parent={parent_id}"))
    expect(page.locator("#executions")).to_contain_text("No execution matches these filters")


def test_parallel_branches_are_drawn_side_by_side(page: Page) -> None:
    execution_id = runtime.trigger("FAN_OUT", {"barrier": True}).execution_id
    runtime.run_execution(execution_id)

    page.goto(f"/executions/{execution_id}/")

    group = page.locator(".tl-row.tl-group")
    lanes = page.locator(".tl-lanes .tl-row.tl-lane")
    expect(group.locator(".tl-label")).to_have_text("fan")
    expect(lanes.locator(".tl-label")).to_have_text(["fan[a]", "fan[b]", "fan[c]"])
    group_label = group.locator(".tl-label .dot").bounding_box()
    bars = []
    for index in range(3):
        label = lanes.nth(index).locator(".tl-label .dot").bounding_box()
        assert label["y"] > group_label["y"], "each lane is under its group"
        assert label["x"] > group_label["x"], "and indented"
        bars.append(lanes.nth(index).locator(".tl-bar.bar-completed").bounding_box())
    # The three branches ran at once (a barrier of three): their bars overlap in time.
    latest_start = max(bar["x"] for bar in bars)
    earliest_end = min(bar["x"] + bar["width"] for bar in bars)
    assert latest_start < earliest_end, bars
    span = group.locator(".tl-bar.bar-group").bounding_box()
    assert span["x"] <= min(bar["x"] for bar in bars) + 1
    group_step = page.locator("#steps-title ~ .step-kind-group")
    expect(group_step.locator(".branches .step-branch .step-name")).to_have_text(
        ["fan[a]", "fan[b]", "fan[c]"]
    )
    screenshot(page, "16-parallel-lanes")


def test_an_attempts_logs_unfold_under_it(page: Page) -> None:
    execution_id = runtime.trigger("LOGGED", {"amount": 5}).execution_id
    runtime.run_execution(execution_id)  # attempt 1 fails; attempt 2 is due a second later
    runtime.run_execution(execution_id, now=timezone.now() + timedelta(seconds=5))

    page.goto(f"/executions/{execution_id}/")
    expect(page.locator("#execution-status")).to_have_text("completed")
    first = page.locator("#step-1-attempt-1-logs")
    second = page.locator("#step-1-attempt-2-logs")
    expect(first.locator("summary")).to_have_text("Logs of attempt 1 (6 lines)")
    expect(first.locator("pre")).to_be_hidden()
    first.locator("summary").click()
    lines = first.locator(".log-line")
    expect(lines).to_have_count(6)
    expect(lines.nth(0)).to_contain_text("INFO app.payments attempt 1 starts")
    expect(lines.nth(2)).to_contain_text("<script>alert(1)</script>")  # text, not markup
    expect(lines.nth(5).locator(".log-level")).to_have_text("WARNING")
    expect(lines.nth(5).locator(".log-data")).to_have_text('{"service": "cards"}')
    font = lines.nth(0).evaluate("line => getComputedStyle(line).fontFamily")
    assert "monospace" in font, font
    expect(second.locator("pre")).to_be_hidden()  # each attempt folds on its own
    screenshot(page, "17-attempt-logs")
