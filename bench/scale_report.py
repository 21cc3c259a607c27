"""The scale benchmark's table, printed and kept in docs/benchmarks.md as a section of its own
(between markers, one per database), which `ploy_bench` keeps when it rewrites the page."""

from __future__ import annotations

import platform
import re
from datetime import UTC, datetime
from pathlib import Path

from bench.report import markdown

HEADER = ["page or endpoint", "p50 ms", "p95 ms", "goal p95 ms", "within", "queries", "KB"]
SECTION = re.compile(
    r"<!-- ploy_scale_bench:(?P<backend>\w+) -->.*?<!-- /ploy_scale_bench:(?P=backend) -->\n?",
    re.DOTALL,
)


def table(timings: list[dict]) -> str:
    rows = [HEADER]
    for timing in timings:
        goal = timing["goal_ms"]
        rows.append(
            [
                timing["name"],
                f"{timing['p50_ms']:.1f}",
                f"{timing['p95_ms']:.1f}",
                f"{goal:g}" if goal is not None else "–",
                verdict(timing),
                str(timing["queries"]),
                f"{timing['kilobytes']:.1f}",
            ]
        )
    return markdown(rows)


def verdict(timing: dict) -> str:
    if timing["status"] != 200:
        return f"HTTP {timing['status']}"
    if timing["goal_ms"] is None:
        return "–"
    return "yes" if timing["p95_ms"] <= timing["goal_ms"] else "no"


def section(*, backend: str, command: str, figures: dict, requests: int) -> str:
    loaded = figures["loaded"]
    label = "PostgreSQL" if backend == "postgres" else "SQLite"
    return "\n".join(
        [
            f"<!-- ploy_scale_bench:{backend} -->",
            f"## Every page at {loaded['executions']:,} executions ({label})",
            "",
            "Written by `ploy_scale_bench`; run it again to refresh this section.",
            "",
            f"- command: `{command}`",
            f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.python_version()} on "
            f"{figures['database']}, DEBUG off; the machine is shared (2 cores)",
            f"- data: {loaded['executions']:,} executions, {loaded['steps']:,} steps, "
            f"{loaded['attempts']:,} attempts, bulk-loaded in {loaded['seconds']:.0f} s; among "
            "them one execution of 10,000 steps, one with a step of 100 attempts, one with an "
            "input and a step output of about 1 MB",
            f"- each row: {requests} requests after 2 warm-up ones, through Django's test client "
            "in one process (server time: middleware, view, queries, template; no network); "
            "queries and size of one answer",
            "",
            table(figures["timings"]),
            "",
            f"<!-- /ploy_scale_bench:{backend} -->",
            "",
        ]
    )


def write_section(path: Path, backend: str, text: str) -> None:
    """Replace this backend's section, or add it at the end."""
    page = path.read_text() if path.exists() else "# Benchmarks\n"
    found = [match for match in SECTION.finditer(page) if match["backend"] == backend]
    if found:
        match = found[0]
        page = page[: match.start()] + text + page[match.end() :]
    else:
        page = page.rstrip("\n") + "\n\n" + text
    path.write_text(page)


def kept_sections(path: Path) -> str:
    """The scale sections of an existing page, for ploy_bench to put back when it rewrites it."""
    if not path.exists():
        return ""
    return "".join(match.group(0) for match in SECTION.finditer(path.read_text()))
