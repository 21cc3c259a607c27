"""What every benchmark child shares: its arguments, its one JSON line of figures, timing."""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The parent reads the last stdout line that starts with this; anything else is noise.
RESULT_PREFIX = "PLOY-BENCH "
SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


@dataclass(frozen=True, kw_only=True)
class Job:
    name: str
    params: dict


def job_from_argv() -> Job:
    """`python -m bench.side_x JOB '{"param": ...}'`."""
    return Job(name=sys.argv[1], params=json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})


def emit(figures: dict) -> None:
    print(RESULT_PREFIX + json.dumps(figures), flush=True)


def parse_result(stdout: str) -> dict | None:
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    return json.loads(lines[-1][len(RESULT_PREFIX) :]) if lines else None


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not done within {timeout:.0f} s")
        time.sleep(interval)


def idle_pause() -> None:
    """A pause between latency samples: the worker is idle and not in step with its poll."""
    time.sleep(random.uniform(0.2, 0.4))


def p50_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sqlite_settings(execute: Callable[[str], object]) -> str:
    """`execute(sql)` returns the first column of the first row, on the connection in use."""
    journal = str(execute("PRAGMA journal_mode")).upper()
    synchronous = SYNCHRONOUS.get(int(execute("PRAGMA synchronous")), "?")
    return f"SQLite journal_mode={journal}, synchronous={synchronous}"


def postgres_settings(execute: Callable[[str], object]) -> str:
    version = str(execute("SHOW server_version")).split()[0]
    commit = execute("SHOW synchronous_commit")
    return f"PostgreSQL {version} synchronous_commit={commit}, fsync={execute('SHOW fsync')}"


def redis_settings(url: str) -> str:
    import redis

    config = redis.Redis.from_url(url).config_get("appendonly")
    return f"Redis appendonly={config.get('appendonly', '?')}"
