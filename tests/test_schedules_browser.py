"""The Schedules page in real headless Chromium: pause a schedule, then resume it, without a
reload (htmx posts with the CSRF token, as the cancel button does)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from engine import clock
from engine.models import Schedule
from tests.test_browser import assert_not_reloaded, browser, mark_document, page  # noqa: F401
from tests.test_schedules import loaded, synced  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def test_pause_then_resume_a_schedule(page, loaded) -> None:  # noqa: F811
    synced(loaded, now=clock.now())
    page.goto("/schedules/")
    mark_document(page)
    row = page.locator("#schedule-TICKER")
    expect(row.locator(".state .badge")).to_have_text("active")
    expect(row.locator(".next-run time")).to_be_visible()

    row.get_by_role("button", name="Pause").click()
    expect(page.locator("#schedules .messages")).to_contain_text("Paused TICKER")
    expect(row).to_have_attribute("data-paused", "true")
    expect(row.locator(".state .badge")).to_have_text("paused")
    expect(row.locator(".next-run")).to_have_text("paused")
    assert Schedule.objects.get(name="TICKER").paused
    # The others are untouched.
    expect(page.locator("#schedule-NIGHTLY_REPORT .state .badge")).to_have_text("active")

    row.get_by_role("button", name="Resume").click()
    expect(page.locator("#schedules .messages")).to_contain_text("Resumed TICKER")
    expect(row).to_have_attribute("data-paused", "false")
    expect(row.locator(".state .badge")).to_have_text("active")
    assert not Schedule.objects.get(name="TICKER").paused
    assert_not_reloaded(page)
