"""docs/benchmarks.md: ploy_bench rewrites its part and keeps the sections other commands wrote."""

from __future__ import annotations

from bench.report import KEPT_MARKER, kept_sections


def test_a_rewrite_keeps_everything_from_the_marker_on(tmp_path):
    page = tmp_path / "benchmarks.md"
    assert kept_sections(page) == ""
    page.write_text(f"# Benchmarks\n\nold table\n\n{KEPT_MARKER}\n\n## HTTP\n\n1,000 req/s\n")
    assert kept_sections(page) == f"\n{KEPT_MARKER}\n\n## HTTP\n\n1,000 req/s\n"
    page.write_text("# Benchmarks\n\nno marker\n")
    assert kept_sections(page) == ""
