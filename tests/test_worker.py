"""Integration: real `manage.py runhuey` processes on the test's SQLite database and queue files.
Workers are killed with SIGKILL mid-step; completed steps must never run twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from engine import get_ploy_context, runtime
from engine.models import Execution, Step
from tests.conftest import wait_for
from tests.workflows.app import calls

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_OUTPUT = {"action": "double", "originalValue": 21, "processedValue": 42}


def finished(execution_id: str, timeout: float = 30) -> Execution:
    def ended() -> Execution | None:
        execution = Execution.objects.get(id=execution_id)
        return execution if execution.is_finished else None

    return wait_for(ended, timeout=timeout)


def test_the_example_runs_end_to_end_on_a_worker(start_worker):
    """The real ploy.py of the project root, as a user runs it."""
    start_worker(PLOY_CONFIG=str(ROOT / "ploy.yaml"))
    env = get_ploy_context().env
    execution_id = env.DATA_FLOW.trigger({"action": "double", "value": 21}).execution_id
    finished(execution_id)
    execution = env.DATA_FLOW.get_execution(execution_id)
    assert execution.status == "completed"
    assert execution.output == EXAMPLE_OUTPUT
    assert [(s.name, s.status) for s in execution.steps] == [
        ("validate", "completed"),
        ("process", "completed"),
        ("store", "completed"),
    ]
    assert execution.steps[1].input == {"action": "double", "value": 21}
    assert execution.steps[1].output == {"processedValue": 42}
    stored = env.DB.prepare("SELECT action, input, output FROM results").all()["results"]
    assert {"action": "double", "input": 21, "output": 42} in stored


def test_a_worker_killed_mid_step_loses_nothing(start_worker):
    first = start_worker()
    execution_id = runtime.trigger(
        "DATA_FLOW", {"action": "double", "value": 21, "pause": 60}
    ).execution_id
    wait_for(lambda: calls(execution_id) == ["validate", "process"])
    first.kill()
    killed_at = timezone.now()

    start_worker()
    execution = finished(execution_id)
    assert execution.status == "completed" and execution.output == EXAMPLE_OUTPUT
    # validate and store ran once; the step in flight ran again (at-least-once)
    assert calls(execution_id) == ["validate", "process", "process", "store"]
    process = Step.objects.get(execution_id=execution_id, name="process")
    assert [(a.number, a.status, a.error_type) for a in process.attempts.all()] == [
        (1, "failed", "WorkerLost"),
        (2, "completed", ""),
    ]
    # recovered within a lease (3 s here) plus the watchdog's margin and the scheduler's tick
    assert (execution.finished_at - killed_at).total_seconds() < 8
    assert execution.run_count == 2


def test_two_workers_never_run_a_step_twice(start_worker):
    start_worker(threads=4)
    start_worker(threads=4)
    ids = [
        runtime.trigger("DATA_FLOW", {"action": "double", "value": n, "sleep_ms": 100}).execution_id
        for n in range(24)
    ]
    for execution_id in ids:
        assert finished(execution_id).status == "completed"
        assert calls(execution_id) == ["validate", "process", "store"]


def test_an_execution_without_sleeps_costs_one_task_run(start_worker):
    workers = [start_worker(threads=2), start_worker(threads=2)]
    ids = [
        runtime.trigger("DATA_FLOW", {"action": "double", "value": n}).execution_id
        for n in range(20)
    ]
    for execution_id in ids:
        assert finished(execution_id).status == "completed"
    time.sleep(2)  # what a watchdog or a duplicate sweep would have run by now
    runs = sum(
        w.log.read_text().count("Executing engine.tasks.ploy.run_execution") for w in workers
    )
    assert runs == 20  # no watchdog per claim, no periodic task per worker


def test_a_step_longer_than_the_lease_keeps_it(start_worker):
    start_worker(threads=2)
    start_worker(threads=2)
    execution_id = runtime.trigger("SLOW", {"seconds": 5}).execution_id  # lease is 3 s
    assert finished(execution_id).status == "completed"
    assert calls(execution_id) == ["first", "slow", "last"]


def test_a_sleep_holds_no_worker_thread(start_worker):
    start_worker(threads=1)
    sleeper = runtime.trigger("SLEEPER", {"ms": 3000}).execution_id
    wait_for(lambda: calls(sleeper) == ["before"])
    quick = runtime.trigger("DATA_FLOW", {"action": "double", "value": 1}).execution_id
    assert finished(quick).status == "completed"
    assert not Execution.objects.get(id=sleeper).is_finished  # still asleep meanwhile
    assert finished(sleeper).output == "done"


def test_a_restart_neither_loses_nor_shortens_a_sleep(start_worker):
    first = start_worker()
    execution_id = runtime.trigger("SLEEPER", {"ms": 2500}).execution_id
    # asleep: "before" is committed (a kill before that would rightly run it again)
    wait_for(lambda: Step.objects.filter(execution_id=execution_id, status="sleeping").exists())
    first.kill()
    HUEY.flush()  # even the wake-up message is lost with the restart
    start_worker()
    execution = finished(execution_id, timeout=90)
    sleep = Step.objects.get(execution_id=execution_id, name="sleep:1")
    after = Step.objects.get(execution_id=execution_id, name="after")
    assert execution.status == "completed"
    assert after.started_at >= sleep.wake_at
    assert calls(execution_id) == ["before", "after"]


def test_a_lost_queue_message_is_recovered_by_the_sweep(start_worker):
    execution_id = runtime.trigger("DATA_FLOW", {"action": "double", "value": 2}).execution_id
    HUEY.flush()  # the message is lost; the database still holds the execution
    time.sleep(1.2)  # past the sweep's grace period (1 s in the tests)
    start_worker()  # the consumer runs its periodic sweep at start
    assert finished(execution_id).status == "completed"


def test_cancel_reaches_a_running_execution_at_its_next_step(start_worker):
    start_worker()
    execution_id = runtime.trigger("SLOW", {"seconds": 2}).execution_id
    wait_for(lambda: calls(execution_id) == ["first", "slow"])
    runtime.cancel_execution(execution_id)
    time.sleep(3)  # let the slow step end: its late write must not resurrect the execution
    execution = Execution.objects.get(id=execution_id)
    assert execution.status == "cancelled"
    assert calls(execution_id) == ["first", "slow"]
    assert Step.objects.get(execution_id=execution_id, name="slow").status == "cancelled"


def test_web_threads_and_workers_share_sqlite_without_lock_errors(start_worker):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    workers = [start_worker(threads=4), start_worker(threads=4)]

    def trigger_many(thread: int) -> list[str]:
        try:
            return [
                runtime.trigger("DATA_FLOW", {"action": "double", "value": n}).execution_id
                for n in range(15)
            ]
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = [execution_id for batch in pool.map(trigger_many, range(6)) for execution_id in batch]
    assert len(set(ids)) == 90
    for execution_id in ids:
        assert finished(execution_id).status == "completed"
    for worker in workers:
        assert "database is locked" not in worker.log.read_text()


def test_an_idle_worker_is_woken_by_a_new_execution(tmp_path):
    """Its threads sleep 20 s between polls of the SQLite queue; a trigger wakes them."""
    import subprocess
    import sys

    from tests.conftest import worker_environment

    log = tmp_path / "worker.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runhuey", "--workers", "2"]
            + ["--delay", "20", "--max-delay", "20"],
            cwd=ROOT,
            env=worker_environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "consumer started" in log.read_text())
        time.sleep(1)  # both threads found the queue empty and sleep their 20 s
        execution_id = runtime.trigger("DATA_FLOW", {"action": "double", "value": 1}).execution_id
        assert finished(execution_id, timeout=8).status == "completed"
    finally:
        process.terminate()
        process.wait(timeout=30)
