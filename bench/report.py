"""The benchmark's table (medians, min-max, ployweb / peer ratios), chart and docs page."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.runner import Results, Sizes
from bench.sides import Side


@dataclass(frozen=True, kw_only=True)
class Figure:
    key: str
    label: str
    better: str  # "lower" or "higher"
    goal: str


def figures(sizes: Sizes) -> list[Figure]:
    threads, executions = sizes.threads, f"{sizes.executions:,}"
    return [
        Figure(
            key=f"steps:{sizes.steps}",
            label=f"ms per durable step (one execution of {sizes.steps:,} trivial steps)",
            better="lower",
            goal="<= 0.5x DBOS",
        ),
        Figure(
            key="sequential",
            label="sequential executions/s in process (3-step data_processing)",
            better="higher",
            goal=">= 2x DBOS",
        ),
        Figure(
            key="e2e",
            label=f"end to end executions/s: 1 process x {threads} threads, {executions} "
            "triggered then drained",
            better="higher",
            goal=">= 2x DBOS",
        ),
        Figure(
            key="triggers",
            label=f"triggers/s from the Python API while {threads} worker threads drain",
            better="higher",
            goal=">= 2,000/s",
        ),
        Figure(
            key="latency",
            label="trigger to first step on an idle worker, p50 ms",
            better="lower",
            goal="<= 20 ms",
        ),
        Figure(
            key="rss",
            label="worker resident memory after the drain, MiB",
            better="lower",
            goal="< 100 MiB",
        ),
    ]


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    median = number(statistics.median(values))
    if len(values) == 1:
        return median
    return f"{median} ({number(min(values))}–{number(max(values))})"


def ratio(results: Results, key: str, peer: Side) -> str:
    mine, theirs = results.values.get(("ployweb", key)), results.values.get((peer.key, key))
    if not mine or not theirs:
        return ""
    return f", {statistics.median(mine) / statistics.median(theirs):.2f}x"


def main_table(results: Results, sides: list[Side], sizes: Sizes) -> list[list[str]]:
    has_ployweb = any(side.key == "ployweb" for side in sides)
    header = ["figure (median (min–max); peers: value, ployweb / peer)"]
    header += [side.label for side in sides] + ["goal"]
    rows = [header]
    for figure in figures(sizes):
        row = [f"{figure.label} ({figure.better} is better)"]
        for side in sides:
            value = cell(results.values.get((side.key, figure.key), []))
            if side.key != "ployweb" and has_ployweb and value != "–":
                value += ratio(results, figure.key, side)
            row.append(value)
        rows.append([*row, figure.goal])
    return rows


def sweep_table(results: Results, sides: list[Side], sizes: Sizes) -> list[list[str]]:
    swept = [side for side in sides if "steps" in side.jobs]
    rows = [["steps per execution", *(f"{side.label}, ms per step" for side in swept)]]
    for steps in sorted(set(sizes.sweep) | {sizes.steps}):
        values = (cell(results.values.get((side.key, f"steps:{steps}"), [])) for side in swept)
        rows.append([f"{steps:,}", *values])
    return rows


def markdown(rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]

    def line(row: list[str]) -> str:
        return (
            "| "
            + " | ".join(text.ljust(width) for text, width in zip(row, widths, strict=True))
            + " |"
        )

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(rows[0]), rule, *(line(row) for row in rows[1:])])


def settings_lines(results: Results, sides: list[Side]) -> list[str]:
    notes = {
        "dbos-sqlite": "DBOS's defaults; ",
        "dbos-wal": "PRAGMAs set on every connection; ",
        "huey": "Huey's SqliteHuey/RedisHuey defaults, ployweb's consumer timings; ",
    }
    lines = []
    for side in sides:
        if side.key in results.settings:
            lines.append(f"- {side.label}: {notes.get(side.key, '')}{results.settings[side.key]}")
    if any(side.group == "dbos" for side in sides):
        lines.append(
            "- DBOS runs in the benchmark's process; its queue: worker_concurrency = the "
            "threads, polling every 0.01 s (its default 1 s would cap it at 8 executions/s)"
        )
    return lines


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    import django

    return (
        f"{os.cpu_count()} cores ({cpu_model()}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, Django {django.get_version()}, "
        f"SQLite {sqlite3.sqlite_version}, Huey {version('huey')}, DBOS {version('dbos')}"
    )


def chart(results: Results, sides: list[Side], sizes: Sizes, path: Path) -> bool:
    """ms per step against steps per execution; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
        import matplotlib.ticker
    except ImportError:
        return False
    figure, axes = pyplot.subplots(figsize=(10, 4.8), dpi=110)
    points = sorted(set(sizes.sweep) | {sizes.steps})
    for side in (side for side in sides if "steps" in side.jobs):
        series = [(n, results.values.get((side.key, f"steps:{n}"))) for n in points]
        series = [(n, values) for n, values in series if values]
        if not series:
            continue
        medians = [statistics.median(values) for _, values in series]
        low = [median - min(values) for median, (_, values) in zip(medians, series, strict=True)]
        high = [max(values) - median for median, (_, values) in zip(medians, series, strict=True)]
        xs = [n for n, _ in series]
        width = 2.5 if side.group == "ployweb" else 1.5
        axes.errorbar(
            xs, medians, yerr=[low, high], marker="o", capsize=3, linewidth=width, label=side.label
        )
    axes.set_xscale("log")
    axes.set_xticks(points, [f"{n:,}" for n in points])
    axes.minorticks_off()
    axes.set_xlabel("steps per execution")
    axes.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    axes.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(plain)
    axes.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.set_ylabel("ms per durable step, log scale (lower is better)")
    axes.set_title("Cost of a durable step")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)
    return True


@dataclass(frozen=True, kw_only=True)
class Report:
    command: str
    sizes: Sizes
    repeat: int
    sides: list[Side]
    results: Results
    notes: list[str]

    def terminal(self) -> str:
        parts = [markdown(main_table(self.results, self.sides, self.sizes)), "", GOALS, ""]
        parts += settings_lines(self.results, self.sides)
        parts += ["", markdown(sweep_table(self.results, self.sides, self.sizes))]
        parts += ["", *self.notes, *(f"failed: {failure}" for failure in self.results.failures)]
        parts.append(f"{len(self.sides)} sides in {self.results.seconds / 60:.1f} min")
        return "\n".join(parts).rstrip() + "\n"

    def page(self, chart_name: str | None) -> str:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        parts = [
            "# Benchmarks",
            "",
            "Written by `python manage.py ploy_bench`; run it again to refresh this page.",
            "",
            f"- command: `{self.command}`",
            f"- date: {now}; the run took {self.results.seconds / 60:.1f} minutes",
            f"- machine: {machine()}",
            f"- each figure: the median of {self.repeat} runs (min–max), each run in a fresh "
            "process on a fresh database and queue; ratio = ployweb / peer",
            "",
            markdown(main_table(self.results, self.sides, self.sizes)),
            "",
            GOALS,
            "",
            "Durability and settings of each side:",
            "",
            *settings_lines(self.results, self.sides),
            "",
            "## Cost of a step against steps per execution",
            "",
            "Each point runs at least "
            f"{self.sizes.sweep_steps:,} steps in all (e.g. {self.sizes.sweep_steps // 10:,} "
            "executions of 10 steps), so the cost of starting and ending an execution shows at "
            f"the small sizes. Sizes other than {self.sizes.steps:,} run once.",
            "",
            markdown(sweep_table(self.results, self.sides, self.sizes)),
            "",
        ]
        if chart_name:
            parts += [f"![ms per durable step against steps per execution]({chart_name})", ""]
        else:
            parts += ["(No chart: matplotlib is not installed; `pip install -e '.[bench]'`.)", ""]
        parts += [*WORKLOADS, ""]
        extra = self.notes + [f"Failed: {failure}" for failure in self.results.failures]
        if extra:
            parts += ["## Notes", "", *(f"- {line}" for line in extra), ""]
        return "\n".join(parts)

    def write(self, path: Path) -> list[Path]:
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = path.with_suffix(".png")
        drawn = chart(self.results, self.sides, self.sizes, picture)
        # The scale benchmark's sections (ploy_scale_bench) and the figures of other commands
        # (after KEPT_MARKER) stay on the page.
        from bench.scale_report import kept_sections as scale_sections

        tail = kept_sections(path)
        scale = scale_sections(path) if scale_sections(path) not in tail else ""
        text = self.page(picture.name if drawn else None).rstrip("\n") + "\n"
        path.write_text(text + ("\n" + scale if scale else "") + tail)
        return [path, picture] if drawn else [path]


# Sections from this line on are written by other benchmark commands; a rewrite keeps them.
KEPT_MARKER = "<!-- Below: figures of other benchmark commands, kept when ploy_bench rewrites -->"


def kept_sections(path: Path) -> str:
    text = path.read_text() if path.exists() else ""
    start = text.find(KEPT_MARKER)
    return "\n" + text[start:] if start >= 0 else ""


GOALS = (
    "Goals against DBOS compare with it at the same durability: its SQLite system database "
    "at WAL + NORMAL for ployweb on SQLite, its PostgreSQL one for ployweb on PostgreSQL."
)
WORKLOADS = [
    "## The workloads",
    "",
    "- **ms per durable step**: one workflow whose steps each return a number, run in the "
    "calling thread (ployweb: `env.CHAIN.run()`; DBOS: calling the `@DBOS.workflow`).",
    "- **sequential executions/s**: the guide's `data_processing` (validate, process, store, "
    "with trivial bodies) run one after another in the calling thread.",
    "- **end to end**: one worker process (ployweb: `manage.py runhuey --workers 8`; raw "
    "Huey: its consumer with 8 threads running a chain of 3 tasks; DBOS: its queue in the "
    "benchmark's process) while the benchmark triggers the executions from the Python API, "
    "timed from the first trigger until the last execution ends.",
    "- **triggers/s**: the trigger loop of the same run, while the workers drain.",
    "- **trigger to first step**: single executions on the idle worker, 0.2-0.4 s apart; "
    "the first step's own clock against the time just before the trigger.",
    "- **worker memory**: the resident set of the worker process after the drain (DBOS: the "
    "benchmark's process, which also triggers).",
]
