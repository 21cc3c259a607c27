"""Plan the runs, run each in a child process with fresh state, and gather the figures."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.child import parse_result
from bench.sides import ROOT, Side, fresh_folder

CHILD_TIMEOUT_SECONDS = 900
# Left out of every child: each run sets its own.
INHERITED_OUT = ("DATABASE_URL", "PLOY_QUEUE_URL", "PLOY_DATA_DIR", "PLOY_CONFIG")


@dataclass(frozen=True, kw_only=True)
class Sizes:
    steps: int  # the table's "ms per durable step": one execution of this many steps
    sweep: tuple[int, ...]  # the chart's steps per execution
    sweep_steps: int  # each sweep point runs at least this many steps in all
    sequential: int
    executions: int
    threads: int
    latency_samples: int


SIZES = {
    "default": Sizes(
        steps=1000,
        sweep=(10, 100, 1000, 10000),
        sweep_steps=1000,
        sequential=300,
        executions=1000,
        threads=8,
        latency_samples=10,
    ),
    "small": Sizes(
        steps=20,
        sweep=(5, 20),
        sweep_steps=20,
        sequential=10,
        executions=10,
        threads=2,
        latency_samples=2,
    ),
}


@dataclass(frozen=True, kw_only=True)
class Run:
    side: Side
    job: str
    params: dict
    label: str


@dataclass(kw_only=True)
class Results:
    """Every run's figures by (side key, figure key); settings and failures by side."""

    values: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    settings: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, run: Run, figures: dict) -> None:
        self.settings[run.side.key] = figures.pop("settings", "")
        if run.job == "steps":
            self.values[run.side.key, f"steps:{run.params['steps']}"].append(figures["ms_per_step"])
        elif run.job == "sequential":
            self.values[run.side.key, "sequential"].append(figures["per_second"])
        else:
            for name in ("e2e", "triggers", "latency", "rss"):
                self.values[run.side.key, name].append(figures[WORKER_FIGURES[name]])


WORKER_FIGURES = {
    "e2e": "e2e_per_second",
    "triggers": "triggers_per_second",
    "latency": "latency_p50_ms",
    "rss": "rss_mib",
}


def steps_params(sizes: Sizes, steps: int) -> dict:
    return {"steps": steps, "executions": max(1, sizes.sweep_steps // steps)}


def plan(sides: list[Side], sizes: Sizes, repeat: int) -> list[Run]:
    """Round-robin over the sides within each repeat, so slow drift hits every side alike.

    The table's step count runs `repeat` times; the chart's other sizes run once.
    """
    worker_params = {
        "executions": sizes.executions,
        "threads": sizes.threads,
        "latency_samples": sizes.latency_samples,
    }
    runs = []
    for number in range(repeat):
        jobs = [("steps", steps_params(sizes, sizes.steps), f"{sizes.steps} steps")]
        if number == 0:
            others = sorted(set(sizes.sweep) - {sizes.steps})
            jobs += [("steps", steps_params(sizes, n), f"{n} steps") for n in others]
        jobs += [
            ("sequential", {"executions": sizes.sequential}, "sequential"),
            ("workers", worker_params, "workers"),
        ]
        for job, params, label in jobs:
            runs += [
                Run(side=side, job=job, params=params, label=f"{label} #{number + 1}")
                for side in sides
                if job in side.jobs
            ]
    return runs


def child_command(run: Run, params: dict, profile: Path | None) -> list[str]:
    import json

    arguments = ["-m", run.side.module, run.job, json.dumps(params)]
    if profile and run.side.group == "ployweb":
        name = f"{run.side.key}-{run.label.replace(' ', '-').replace('#', '')}.txt"
        arguments = ["-m", "pyinstrument", "-r", "text", "-o", str(profile / name), *arguments]
    return [sys.executable, *arguments]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in INHERITED_OUT}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def run_one(run: Run, profile: Path | None) -> dict:
    """One child with fresh state; its figures, or RuntimeError with its last lines."""
    with fresh_folder() as folder, run.side.fresh(folder) as fresh:
        returncode, stdout, stderr = run_child(
            child_command(run, {**run.params, **fresh.params}, profile), child_env(fresh.env)
        )
    figures = parse_result(stdout)
    if returncode != 0 or figures is None:
        tail = " | ".join(stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"exit {returncode}: {tail}")
    return figures


def run_child(command: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Its own process group, so a timeout or Ctrl-C also ends the worker it started."""
    child = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = child.communicate(timeout=CHILD_TIMEOUT_SECONDS)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise
    return child.returncode, stdout, stderr


class Progress:
    """tqdm's bar when it is installed, else one plain line per run."""

    def __init__(self, total: int, write: Callable[[str], None]) -> None:
        self.total, self.done, self.write = total, 0, write
        try:
            from tqdm import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True)

    def start(self, run: Run) -> None:
        description = f"{run.side.key}: {run.label}"
        if self.bar is not None:
            self.bar.set_description(description)
        else:
            self.write(f"[{self.done + 1}/{self.total}] {description}")

    def finish(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_all(runs: list[Run], *, write: Callable[[str], None], profile: Path | None) -> Results:
    results, progress = Results(), Progress(len(runs), write)
    started = time.monotonic()
    try:
        for run in runs:
            progress.start(run)
            try:
                results.add(run, run_one(run, profile))
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                results.failures.append(f"{run.side.label}, {run.label}: {error}")
            progress.finish()
    finally:
        progress.close()
    results.seconds = time.monotonic() - started
    return results
