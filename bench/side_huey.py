"""Raw Huey's side, the floor of queue overhead: `python -m bench.side_huey workers PARAMS`.

One consumer process with `threads` threads runs three-task chains (bench/huey_chain.py), with
the same consumer timings as ployweb's workers. Only the worker workloads apply: Huey has no
durable steps to run in process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.child import (
    Job,
    emit,
    idle_pause,
    job_from_argv,
    p50_ms,
    redis_settings,
    rss_mib,
    sqlite_settings,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
# ployweb's consumer settings (ployweb/settings.py HUEY["consumer"]), so only the work differs.
CONSUMER_OPTIONS = ["--worker-type", "thread", "--delay", "0.1", "--max-delay", "0.5"]


def start_consumer(threads: int) -> subprocess.Popen:
    log = open(Path(os.environ["BENCH_TMP_DIR"]) / "consumer.log", "ab")  # noqa: SIM115
    command = [sys.executable, "-m", "huey.bin.huey_consumer", "bench.huey_chain.huey"]
    command += ["--workers", str(threads), *CONSUMER_OPTIONS]
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def stop_consumer(consumer: subprocess.Popen) -> None:
    consumer.send_signal(signal.SIGTERM)
    try:
        consumer.wait(timeout=30)
    except subprocess.TimeoutExpired:
        consumer.kill()
        consumer.wait()


def sample() -> float:
    """One chain on an idle consumer: seconds from enqueue to the first task's start."""
    from bench.huey_chain import huey, validate

    key = f"sample-{uuid.uuid4().hex}"
    triggered = time.time()
    validate(key)
    wait_until(lambda: huey.get(f"done:{key}") is not None, timeout=60)
    return huey.get(f"started:{key}") - triggered


def drain(executions: int) -> tuple[float, float]:
    """Enqueue `executions` chains, wait for all; (enqueue seconds, enqueue-to-done seconds)."""
    from bench.huey_chain import huey, validate

    baseline = huey.storage.result_store_size()
    started = time.perf_counter()
    for number in range(executions):
        validate(f"bulk-{number}")
    triggered = time.perf_counter()
    done = baseline + executions
    wait_until(lambda: huey.storage.result_store_size() >= done, timeout=600, interval=0.02)
    return triggered - started, time.perf_counter() - started


def settings_text() -> str:
    from bench.huey_chain import huey

    queue = os.environ["BENCH_HUEY_QUEUE"]
    if queue.startswith("redis://"):
        return f"queue: {redis_settings(queue)}"
    text = sqlite_settings(lambda sql: huey.storage.conn.execute(sql).fetchone()[0])
    return f"queue: {text}"


def workers(params: dict) -> dict:
    consumer = start_consumer(params["threads"])
    try:
        sample()  # the consumer is up and warm
        latencies = []
        for _ in range(params["latency_samples"]):
            idle_pause()
            latencies.append(sample())
        executions = params["executions"]
        enqueue_seconds, drain_seconds = drain(executions)
        rss = rss_mib(consumer.pid)
    finally:
        stop_consumer(consumer)
    return {
        "latency_p50_ms": p50_ms(latencies),
        "triggers_per_second": executions / enqueue_seconds,
        "e2e_per_second": executions / drain_seconds,
        "rss_mib": rss,
    }


def main(job: Job) -> None:
    if job.name != "workers":
        raise SystemExit(f"raw Huey runs only the workers job, not {job.name!r}")
    figures = workers(job.params)
    emit({**figures, "settings": settings_text()})


if __name__ == "__main__":
    main(job_from_argv())
