"""The benchmark command on tiny sizes: it runs, prints its table and writes its page."""

from __future__ import annotations

import importlib.util
from io import StringIO

from django.core.management import call_command

from bench import sides


def test_small_run_prints_the_table_and_writes_the_page(tmp_path):
    out, err = StringIO(), StringIO()
    page = tmp_path / "benchmarks.md"
    call_command(
        "ploy_bench",
        "--sizes=small",
        "--only=ployweb",
        "--repeat=1",
        f"--output={page}",
        stdout=out,
        stderr=err,
    )
    printed = out.getvalue()
    assert "| ployweb (SQLite)" in printed
    for label in ("ms per durable step", "sequential executions/s", "end to end executions/s"):
        assert label in printed
    assert "failed:" not in printed, printed
    text = page.read_text()
    assert "`python manage.py ploy_bench --sizes small --repeat 1 --only ployweb" in text
    assert "trigger to first step" in text
    if importlib.util.find_spec("matplotlib"):
        assert page.with_suffix(".png").stat().st_size > 0


def test_peers_are_left_out_with_a_note_when_the_extra_is_missing(monkeypatch):
    monkeypatch.setattr(sides, "dbos_installed", lambda: False)
    servers = sides.Servers(postgres="postgres://nobody@127.0.0.1:1/none", redis="redis://x")
    chosen, notes = sides.choose_sides(
        backend="sqlite", only={"ployweb", "dbos", "huey"}, servers=servers
    )
    assert [side.key for side in chosen] == ["ployweb", "huey"]
    assert notes == ["DBOS skipped: the [bench] extra is not installed (pip install -e '.[bench]')"]
