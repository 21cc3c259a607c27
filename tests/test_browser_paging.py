"""A big execution's page in headless Chromium: more steps, every attempt and a whole value on
demand, without a reload, and the loaded steps kept while the page follows the execution live."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect  # noqa: E402

from engine.models import Attempt, Execution, Step  # noqa: E402  (after test_browser's environment)
from tests.test_browser import assert_not_reloaded, browser, mark_document, page
from tests.test_dashboard import make_execution
from tests.test_execution_paging import add_steps

__all__ = ["browser", "page"]  # the fixtures
pytestmark = pytest.mark.django_db(transaction=True)


def running_execution() -> Execution:
    return make_execution(
        status="running", finished=None, created=timezone.now() - timedelta(seconds=5)
    )


def give_a_big_output(step: Step) -> None:
    """About 50 KB of JSON: over the page's 10 KB, so it shows cut, with "Show all"."""
    Step.objects.filter(id=step.id).update(output={"rows": ["x" * 1000 for _ in range(50)]})


def open_page(page: Page, execution: Execution):
    """The execution's page, marked to tell a reload; its step cards."""
    page.goto(f"/executions/{execution.id}/")
    mark_document(page)
    return page.locator("#steps article.step")


def test_a_big_execution_pages_its_steps_attempts_and_values(page: Page) -> None:
    execution = running_execution()
    [retried] = add_steps(execution, 1, attempts=30, status="running")
    [big] = add_steps(execution, 1)
    give_a_big_output(big)
    add_steps(execution, 148)

    steps = open_page(page, execution)
    expect(steps).to_have_count(50)
    expect(page.locator(".tl-row", has_text="100 more steps")).to_be_visible()

    page.get_by_role("link", name="Show the next 50 steps").click()
    expect(steps).to_have_count(100)
    page.get_by_role("link", name="Show the next 50 steps").click()
    expect(steps).to_have_count(150)
    expect(page.locator("#step-150")).to_contain_text("step-0149")
    expect(page.locator("#steps-more")).to_have_count(0)

    attempts = page.locator("#step-1-attempts tbody tr")
    expect(attempts).to_have_count(10)
    page.locator("#step-1").get_by_role("link", name="Show all 30 attempts").click()
    expect(attempts).to_have_count(30)
    expect(page.locator("#step-1-attempt-1")).to_contain_text("boom 1")

    output = page.locator("#step-2-output")
    expect(output).to_contain_text("Showing the first 10 KB")
    output.get_by_role("link", name="Show all").click()
    expect(output).not_to_contain_text("Showing the first")
    assert output.locator("pre").inner_text().count("x" * 1000) == 50

    # The page follows the execution live, and keeps the steps the user loaded.
    Step.objects.filter(id=retried.id).update(status="completed")
    expect(page.locator("#step-1 .badge").first).to_have_text("completed")
    expect(steps).to_have_count(150)
    Execution.objects.filter(id=execution.id).update(
        status="completed", finished_at=big.finished_at
    )
    expect(page.locator("#execution-status")).to_have_text("completed")
    expect(steps).to_have_count(150)
    assert_not_reloaded(page)
    assert re.search(rf"/executions/{execution.id}/$", page.url)


def test_the_steps_and_attempts_loaded_on_demand_follow_the_execution_live(page: Page) -> None:
    execution = running_execution()
    add_steps(execution, 60)
    [runner] = add_steps(execution, 1, attempts=12, status="running")  # the 61st: page two
    [big] = add_steps(execution, 1)
    give_a_big_output(big)
    add_steps(execution, 38)

    steps = open_page(page, execution)
    page.get_by_role("link", name="Show the next 50 steps").click()
    expect(steps).to_have_count(100)
    card = page.locator("#step-61")
    card.get_by_role("link", name="Show all 12 attempts").click()
    attempts = page.locator("#step-61-attempts tbody tr")
    expect(attempts).to_have_count(12)
    expect(card.locator(".badge").first).to_have_text("running")
    output = page.locator("#step-62-output")
    output.get_by_role("link", name="Show all").click()
    expect(output).not_to_contain_text("Showing the first")

    # A 13th attempt completes the step: both the loaded card and its loaded attempts show it.
    Attempt.objects.create(
        step=runner, number=13, status="completed", started_at=runner.started_at,
        finished_at=runner.finished_at,
    )  # fmt: skip
    Step.objects.filter(id=runner.id).update(status="completed", attempt_count=13)

    expect(card.locator(".badge").first).to_have_text("completed")
    expect(attempts).to_have_count(13)
    expect(page.locator("#step-61-attempt-13")).to_contain_text("completed")
    expect(steps).to_have_count(100)
    expect(output).not_to_contain_text("Showing the first")  # kept whole through the reload
    assert output.locator("pre").inner_text().count("x" * 1000) == 50
    assert_not_reloaded(page)
