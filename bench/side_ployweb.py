"""ployweb's side of the benchmark: `python -m bench.side_ployweb JOB PARAMS`.

The parent sets the environment (a fresh PLOY_DATA_DIR, or DATABASE_URL and PLOY_QUEUE_URL on
a fresh database); this process migrates it, runs one job and prints its figures.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.child import (
    Job,
    emit,
    idle_pause,
    job_from_argv,
    p50_ms,
    postgres_settings,
    redis_settings,
    rss_mib,
    sqlite_settings,
    timed,
    wait_until,
)

if TYPE_CHECKING:
    from engine.bindings import WorkflowBinding

ROOT = Path(__file__).resolve().parent.parent
DATA_INPUT = {"action": "double", "value": 21}


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ployweb.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def binding(name: str) -> WorkflowBinding:
    from engine import get_ploy_context

    return getattr(get_ploy_context().env, name)


def run_here(name: str, input: dict) -> None:
    """One execution run to its end in this thread, through the Python API."""
    binding(name).run(input)


def count(status: str) -> int:
    from engine.models import Execution

    return Execution.objects.filter(status=status).count()


def settings_text() -> str:
    from django.db import connection
    from huey.contrib.djhuey import HUEY
    from huey.storage import SqliteStorage

    def first(sql: str) -> object:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0]

    database = sqlite_settings(first) if connection.vendor == "sqlite" else postgres_settings(first)
    if not isinstance(HUEY.storage, SqliteStorage):
        return f"database: {database}; queue: {redis_settings(os.environ['PLOY_QUEUE_URL'])}"

    def queue_first(sql: str) -> object:
        return HUEY.storage.conn.execute(sql).fetchone()[0]

    return f"database: {database}; queue: {sqlite_settings(queue_first)}"


def steps(params: dict) -> dict:
    run_here("CHAIN", {"steps": 1})  # imports, connection, registry: not part of the figure
    executions, size = params["executions"], params["steps"]
    seconds = timed(lambda: [run_here("CHAIN", {"steps": size}) for _ in range(executions)])
    assert count("completed") == executions + 1, "an execution did not complete"
    return {"ms_per_step": seconds * 1000 / (executions * size)}


def sequential(params: dict) -> dict:
    run_here("DATA_FLOW", DATA_INPUT)
    executions = params["executions"]
    seconds = timed(lambda: [run_here("DATA_FLOW", DATA_INPUT) for _ in range(executions)])
    assert count("completed") == executions + 1, "an execution did not complete"
    return {"per_second": executions / seconds}


def start_worker(threads: int) -> subprocess.Popen:
    log = open(Path(os.environ.get("PLOY_DATA_DIR", "/tmp")) / "worker.log", "ab")  # noqa: SIM115
    command = [sys.executable, str(ROOT / "manage.py"), "runhuey", "--workers", str(threads)]
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def stop_worker(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def run_through_worker(input: dict) -> float:
    """Trigger one execution, wait for its end; the seconds from trigger to its first step."""
    workflow = binding("DATA_FLOW")
    triggered = time.time()
    execution_id = workflow.trigger(input).execution_id

    def ended() -> bool:
        return workflow.get_execution(execution_id).status != "running"

    wait_until(ended, timeout=60)
    return workflow.get_execution(execution_id).output["startedAt"] - triggered


def latency_and_drain(params: dict) -> dict:
    """Idle latency samples, then `executions` triggered at once and drained."""
    latencies = []
    for _ in range(params["latency_samples"]):
        idle_pause()
        latencies.append(run_through_worker(DATA_INPUT))
    workflow, executions = binding("DATA_FLOW"), params["executions"]
    started = time.perf_counter()
    for _ in range(executions):
        workflow.trigger(DATA_INPUT)
    triggered = time.perf_counter()
    wait_until(lambda: count("running") == 0, timeout=600, interval=0.02)
    drained = time.perf_counter()
    assert count("completed") == executions + len(latencies) + 1, "an execution did not complete"
    return {
        "latency_p50_ms": p50_ms(latencies),
        "triggers_per_second": executions / (triggered - started),
        "e2e_per_second": executions / (drained - started),
    }


def workers(params: dict) -> dict:
    worker = start_worker(params["threads"])
    try:
        run_through_worker(DATA_INPUT)  # the worker is up and warm
        figures = latency_and_drain(params)
        figures["rss_mib"] = rss_mib(worker.pid)
    finally:
        stop_worker(worker)
    return figures


JOBS = {"steps": steps, "sequential": sequential, "workers": workers}


def main(job: Job) -> None:
    setup()
    figures = JOBS[job.name](job.params)
    emit({**figures, "settings": settings_text()})


if __name__ == "__main__":
    main(job_from_argv())
