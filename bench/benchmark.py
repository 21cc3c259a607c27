"""Prints ployweb's speed and memory figures. Run: .venv/bin/python bench/benchmark.py

Uses a fresh data folder (SQLite database and queue), or PostgreSQL + Redis with --scaleout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup(scaleout: bool) -> dict[str, str]:
    env = {
        "PLOY_DATA_DIR": tempfile.mkdtemp(prefix="ploy-bench-"),
        "PLOY_CONFIG": str(ROOT / "bench" / "ploy.yaml"),
        "DJANGO_SETTINGS_MODULE": "ployweb.settings",
        "PLOY_LOG_LEVEL": "WARNING",
    }
    if scaleout:
        import psycopg
        import redis

        with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS ployweb_bench WITH (FORCE)")
            c.execute("CREATE DATABASE ployweb_bench")
        redis.Redis.from_url("redis://127.0.0.1:6379/14").flushdb()
        env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/ployweb_bench"
        env["PLOY_QUEUE_URL"] = "redis://127.0.0.1:6379/14"
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def timed(label: str, count: int, unit: str, work) -> float:
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    print(f"{label:<58} {count / seconds:>10,.0f} {unit}/s   ({seconds * 1000:,.0f} ms total)")
    return seconds


def in_process() -> None:
    from engine import runtime

    ids = [runtime.trigger("CHAIN", {"steps": 10}).execution_id for _ in range(100)]
    timed(
        "in-process: 100 executions x 10 new steps (run)",
        1000,
        "steps",
        lambda: [runtime.run_execution(execution_id) for execution_id in ids],
    )

    execution_id = runtime.trigger("CHAIN", {"steps": 500, "sleep_ms": 1}).execution_id
    runtime.run_execution(execution_id)  # runs the 500 steps, then sleeps
    time.sleep(0.01)
    timed(
        "in-process: replay of 500 completed steps (one run)",
        500,
        "steps",
        lambda: runtime.run_execution(execution_id),
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def with_workers(env: dict[str, str], processes: int, threads: int, count: int) -> None:
    from engine import runtime
    from engine.models import Execution

    workers = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runhuey", "-w", str(threads)],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    time.sleep(2)
    try:

        def run_all() -> None:
            for _ in range(count):
                runtime.trigger("CHAIN", {"steps": 3})
            while Execution.objects.running().exists():
                time.sleep(0.02)

        timed(
            f"workers: {processes} x {threads} threads, {count} executions of 3 steps "
            "(trigger -> completed)",
            count,
            "executions",
            run_all,
        )
        rss = [rss_kib(worker.pid) // 1024 for worker in workers]
        print(f"{'worker resident memory after the run (MiB each)':<58} {rss}")
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scaleout", action="store_true", help="PostgreSQL + Redis")
    parser.add_argument("--executions", type=int, default=500)
    arguments = parser.parse_args()
    env = setup(arguments.scaleout)
    backend = "PostgreSQL + Redis" if arguments.scaleout else "SQLite + SQLite"
    print(f"ployweb benchmark on {backend}, {os.cpu_count()} cores")
    in_process()
    with_workers(env, processes=2, threads=4, count=arguments.executions)


if __name__ == "__main__":
    main()
