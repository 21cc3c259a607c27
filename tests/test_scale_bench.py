"""The scale benchmark on a tiny history: it loads, times every page and prints its table."""

from __future__ import annotations

import re
from io import StringIO

from django.core.management import call_command

from bench.scale_report import write_section

PAGES = (
    "dashboard list",
    "list search by id prefix",
    "list refresh with counters (every 3 s)",
    "execution page: 10,000 steps",
    "execution page: a step of 100 attempts",
    "next 50 steps of 10,000 (htmx)",
    "all 100 attempts of a step (htmx)",
    "workflows page",
    "workers page",
    "admin changelist",
    "admin search by id prefix",
    "admin change page",
    "API list",
    "API execution: 10,000 steps",
    "API steps page (100 of 10,000)",
    "/metrics",
)
CELLS = (r"(?P<name>.+?)", r"(?P<p50>[\d.]+)", r"(?P<p95>[\d.]+)", r"(?P<goal>[\d.]+|–)")
CELLS += (r"(?P<within>yes|no|–)", r"(?P<queries>\d+)", r"(?P<kb>[\d.]+)")
ROW = re.compile(r"^\| " + r" +\| ".join(CELLS) + r" +\|$")


def test_a_tiny_run_times_every_page_and_writes_its_section(tmp_path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nOther figures.\n")
    out, err = StringIO(), StringIO()

    call_command(
        "ploy_scale_bench",
        "--executions=300",
        "--requests=2",
        f"--output={page}",
        stdout=out,
        stderr=err,
    )

    lines = out.getvalue().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["page or endpoint", "p50 ms", "p95 ms", "goal p95 ms", "within"] + [
        "queries",
        "KB",
    ]
    rows = {match["name"]: match for line in lines if (match := ROW.match(line))}
    assert set(PAGES) <= set(rows), sorted(set(PAGES) - set(rows))
    assert all(float(row["p95"]) >= float(row["p50"]) > 0 for row in rows.values())
    assert rows["execution page: 10,000 steps"]["queries"] == "5"
    assert rows["API execution: 10,000 steps"]["queries"] == "2"
    assert "HTTP" not in out.getvalue()  # every page answered 200
    assert "loaded 10,303 executions" not in err.getvalue()
    assert "loaded 303 executions, 10,302 steps and 10,401 attempts" in err.getvalue()
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nOther figures.\n")
    assert "## Every page at 303 executions (SQLite)" in text
    assert "`python manage.py ploy_scale_bench --executions 300 --requests 2" in text


def test_a_new_run_replaces_its_own_section_only(tmp_path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n")

    write_section(
        page, "sqlite", "<!-- ploy_scale_bench:sqlite -->\nold\n<!-- /ploy_scale_bench:sqlite -->\n"
    )
    write_section(
        page,
        "postgres",
        "<!-- ploy_scale_bench:postgres -->\npg\n<!-- /ploy_scale_bench:postgres -->\n",
    )
    write_section(
        page, "sqlite", "<!-- ploy_scale_bench:sqlite -->\nnew\n<!-- /ploy_scale_bench:sqlite -->\n"
    )

    text = page.read_text()
    assert "old" not in text and text.count("new") == 1 and text.count("pg\n") == 1
    assert text.index("new") < text.index("pg\n")
