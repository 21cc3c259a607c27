"""'Rerun from here' and the bulk actions' confirmation in real headless Chromium, against a
live server and a real worker (the fixtures of tests/test_browser.py)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest

from engine import runtime
from engine.models import Execution
from tests import test_browser
from tests.conftest import wait_for
from tests.test_browser import Page, assert_not_reloaded, expect, mark_document, screenshot
from tests.workflows.reruns import calls

pytestmark = pytest.mark.django_db(transaction=True)

# The browser and a fresh page per test, with its checks for JavaScript errors.
browser = test_browser.browser
page = test_browser.page


def test_rerun_from_here_reuses_the_steps_before_and_the_fork_completes(
    page: Page, start_worker: Callable
) -> None:
    start_worker()
    label = uuid.uuid4().hex
    execution_id = runtime.trigger("FORKABLE", {"tag": label, "n": 4}).execution_id
    wait_for(lambda: Execution.objects.filter(id=execution_id, status="completed").exists())
    page.goto(f"/executions/{execution_id}/")
    mark_document(page)
    questions: list[str] = []
    page.on("dialog", lambda dialog: questions.append(dialog.message))  # accepted by `page`

    publish = page.locator(".step", has_text="publish").last
    expect(page.get_by_role("button", name=re.compile("^Rerun from step"))).to_have_count(5)
    publish.get_by_role("button", name="Rerun from step publish").click()

    expect(page).not_to_have_url(re.compile(execution_id))
    expect(page.locator(".messages")).to_contain_text(
        "Rerun started with the same input from step 'publish', reusing the steps before it."
    )
    expect(page.locator("#execution-status")).to_have_text("completed")
    expect(page.locator(".exec-head")).to_contain_text(f"rerun of {execution_id}")
    expect(page.locator(".reused-from")).to_have_count(6)  # fetch, double, check, fan, 2 branches
    expect(page.locator(".step", has_text="fetch").first).to_contain_text("reused from")
    assert questions == [
        "Start a new execution of forkable from step publish, with the same input? The 6 steps "
        "before it are reused as stored: their functions do not run again."
    ]
    assert calls(label).count("fetch") == 1 and calls(label).count("publish") == 2
    assert_not_reloaded(page)
    screenshot(page, "20-rerun-from-here")


def test_cancel_all_matching_asks_with_the_count_then_cancels_them(page: Page) -> None:
    sleeping = [runtime.trigger("SLEEPER", {"ms": 600_000}).execution_id for _ in range(3)]
    runtime.trigger("FLAKY", {"failures": 0})
    page.goto("/?workflow=sleeper")
    mark_document(page)

    page.get_by_role("link", name="Cancel all matching…").click()
    dialog = page.locator("#bulk-confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Cancel 3 running executions of workflow sleeper?")
    dialog.get_by_role("button", name="Keep them").click()
    expect(dialog).to_be_hidden()
    assert Execution.objects.filter(id__in=sleeping, status="running").count() == 3

    page.get_by_role("link", name="Cancel all matching…").click()
    dialog = page.locator("#bulk-confirm[open]")
    expect(dialog).to_contain_text("Cancel 3 running executions")
    screenshot(page, "21-bulk-confirm")
    dialog.get_by_role("button", name="Cancel 3 executions").click()

    expect(page.locator(".messages")).to_contain_text("Cancelled 3 executions.")
    expect(page.locator("#bulk-confirm")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"/\?workflow=sleeper$"))
    expect(page.locator("#executions .badge-cancelled")).to_have_count(3)
    assert Execution.objects.filter(id__in=sleeping, status="cancelled").count() == 3
    assert Execution.objects.filter(workflow="flaky", status="running").count() == 1
    assert_not_reloaded(page)

    page.get_by_role("link", name="Rerun all matching…").click()
    dialog = page.locator("#bulk-confirm[open]")
    expect(dialog).to_contain_text("Rerun 3 executions of workflow sleeper?")
    dialog.get_by_role("button", name="Rerun 3 executions").click()
    expect(page.locator(".messages")).to_contain_text("Started a rerun of 3 executions.")
    assert Execution.objects.filter(rerun_of__in=sleeping).count() == 3
