"""Parts of the execution page worked out once in Python rather than per step in the template:
the wording of "Rerun from here" and the tick lines of the timeline's rows."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from tests.test_dashboard import detail_url, make_execution
from tests.test_execution_paging import add_steps

pytestmark = pytest.mark.django_db


def test_rerun_from_here_says_what_it_reuses_in_the_singular_and_the_plural(client: Client):
    execution = make_execution()
    add_steps(execution, 3)

    page = client.get(detail_url(execution)).content.decode()

    assert (
        "from step step-0000, with the same input? Nothing is reused: it is the first step." in page
    )
    assert (
        "from step step-0001, with the same input? The 1 step before it is reused as stored: its "
        "function does not run again."
    ) in page
    assert (
        "from step step-0002, with the same input? The 2 steps before it are reused as stored: "
        "their functions do not run again."
    ) in page


def test_every_timeline_row_draws_a_line_at_each_tick(client: Client):
    execution = make_execution(finished=1000)
    add_steps(execution, 120)

    html = client.get(detail_url(execution)).content.decode()
    timeline = html.split('id="timeline-title"')[1].split("</section>")[0]
    ticks = re.findall(r'<span class="tl-tick" style="left: ([0-9.]+)%">', timeline)
    rows = timeline.split('<div class="tl-row')[2:]  # past the axis

    assert len(ticks) >= 2 and len(rows) == 1 + 50 + 1
    for row in rows:
        assert re.findall(r'<span class="tl-grid" style="left: ([0-9.]+)%"', row) == ticks
