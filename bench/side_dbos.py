"""DBOS Transact's side: `python -m bench.side_dbos JOB PARAMS`, the same workloads as ployweb's.

PARAMS carries `system_database_url` (a fresh SQLite file or PostgreSQL database) and, for
SQLite, `wal`: WAL journal and synchronous=NORMAL on every connection instead of DBOS's default.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from bench.app import process, store, validate
from bench.child import (
    Job,
    emit,
    idle_pause,
    job_from_argv,
    p50_ms,
    postgres_settings,
    rss_mib,
    sqlite_settings,
    timed,
)

# DBOS's queue polls the system database; its default (1 s) caps a queue of concurrency 8 at
# 8 workflows a second, so the benchmark gives it a short interval.
QUEUE_POLLING_SECONDS = 0.01
RESULT_POLLING_SECONDS = 0.01
DATA_INPUT = {"action": "double", "value": 21}


def use_wal_normal() -> None:
    """Every new SQLite connection in this process: WAL journal, synchronous=NORMAL."""
    import sqlalchemy
    from sqlalchemy import event

    @event.listens_for(sqlalchemy.engine.Engine, "connect")
    def tune(dbapi_connection: object, _record: object) -> None:
        if type(dbapi_connection).__module__.startswith("sqlite3"):
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def define() -> tuple[Callable[[int], dict], Callable[[dict], dict]]:
    """Register the workflows with DBOS: (chain, data_processing)."""
    from dbos import DBOS

    @DBOS.step()
    def trivial(number: int) -> int:
        return number

    @DBOS.workflow()
    def chain(steps: int) -> dict:
        return {"total": sum(trivial(number) for number in range(steps))}

    validate_step, process_step, store_step = (DBOS.step()(fn) for fn in (validate, process, store))

    @DBOS.workflow()
    def data_processing(input: dict) -> dict:
        validation = validate_step(input)
        processed = process_step(input)
        store_step(processed)
        return {**processed, "startedAt": validation["startedAt"]}

    return chain, data_processing


def launch(params: dict) -> tuple[Callable[[int], dict], Callable[[dict], dict]]:
    from dbos import DBOS

    if params.get("wal"):
        use_wal_normal()
    config = {
        "name": "ploy-bench",
        "system_database_url": params["system_database_url"],
        "log_level": "WARNING",
    }
    DBOS(config=config)
    workflows = define()
    DBOS.launch()
    return workflows


def settings_text() -> str:
    from dbos._dbos import _get_dbos_instance
    from sqlalchemy import text

    engine = _get_dbos_instance()._sys_db.engine

    def first(sql: str) -> object:
        with engine.connect() as connection:
            return connection.execute(text(sql)).scalar()

    if engine.dialect.name == "sqlite":
        return f"system database: {sqlite_settings(first)}"
    return f"system database: {postgres_settings(first)}"


def steps(params: dict) -> dict:
    chain, _ = launch(params)
    chain(1)
    executions, size = params["executions"], params["steps"]
    seconds = timed(lambda: [chain(size) for _ in range(executions)])
    return {"ms_per_step": seconds * 1000 / (executions * size)}


def sequential(params: dict) -> dict:
    _, data_processing = launch(params)
    data_processing(DATA_INPUT)
    executions = params["executions"]
    seconds = timed(lambda: [data_processing(DATA_INPUT) for _ in range(executions)])
    return {"per_second": executions / seconds}


def workers(params: dict) -> dict:
    """Its queue of concurrency `threads` in this process: idle latency, then a drain."""
    from dbos import DBOS

    _, data_processing = launch(params)
    queue = DBOS.register_queue(
        "bench",
        worker_concurrency=params["threads"],
        polling_interval_sec=QUEUE_POLLING_SECONDS,
    )

    def through_queue() -> float:
        triggered = time.time()
        output = queue.enqueue(data_processing, DATA_INPUT).get_result(
            polling_interval_sec=RESULT_POLLING_SECONDS
        )
        return output["startedAt"] - triggered

    through_queue()
    latencies = []
    for _ in range(params["latency_samples"]):
        idle_pause()
        latencies.append(through_queue())
    executions = params["executions"]
    started = time.perf_counter()
    handles = [queue.enqueue(data_processing, DATA_INPUT) for _ in range(executions)]
    triggered = time.perf_counter()
    for handle in handles:
        handle.get_result(polling_interval_sec=RESULT_POLLING_SECONDS)
    drained = time.perf_counter()
    return {
        "latency_p50_ms": p50_ms(latencies),
        "triggers_per_second": executions / (triggered - started),
        "e2e_per_second": executions / (drained - started),
        "rss_mib": rss_mib(os.getpid()),
    }


JOBS = {"steps": steps, "sequential": sequential, "workers": workers}


def main(job: Job) -> None:
    from dbos import DBOS

    figures = JOBS[job.name](job.params)
    figures["settings"] = settings_text()
    DBOS.destroy()
    emit(figures)


if __name__ == "__main__":
    main(job_from_argv())
