"""Fault injection on SQLite with real `manage.py runhuey` processes: SIGKILL at random points,
SIGSTOP past the worker timeout, SIGTERM mid-step, and workers racing over thousands of
executions. Step bodies mark their start and end in files (tests/workflows/faults.py), so the
tests count body runs across processes and compare them with the attempts the engine recorded.

`pytest -s tests/test_faults.py` prints the measured recovery and hand-over times."""

from __future__ import annotations

import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import pytest
from django.db import connection
from django.test import Client
from huey.contrib.djhuey import HUEY

from engine import clock, runtime
from engine.context import MAX_INTERRUPTED_ATTEMPTS
from engine.models import Attempt, Execution, Step, WorkerStatus
from engine.models import Worker as WorkerRow
from tests.conftest import Worker, wait_for
from tests.workflows.faults import (
    CHAIN_AFTER_SLEEP,
    CHAIN_BEFORE_SLEEP,
    CHAIN_STEPS,
    Mark,
    marks,
    starts,
)

pytestmark = pytest.mark.django_db(transaction=True)

SEED = 20261201
KILL_POINTS = 30
TEST_TIMEOUT = 2.0  # PLOY_WORKER_TIMEOUT_SECONDS in tests/settings.py
DEFAULT_TIMEOUT = "5"  # the setting's default, given to the workers of the recovery tests
CHAIN_NAMES = [*CHAIN_BEFORE_SLEEP, *CHAIN_AFTER_SLEEP]


def report(what: str, seconds: list[float] | float) -> None:
    """Print a measured figure (`pytest -s`); the README quotes them."""
    if not seconds:
        print(f"\n[measured] {what}: none")
        return
    if isinstance(seconds, float):
        print(f"\n[measured] {what}: {seconds:.2f} s")
        return
    print(
        f"\n[measured] {what}: n={len(seconds)} min={min(seconds):.2f} s "
        f"median={statistics.median(seconds):.2f} s max={max(seconds):.2f} s"
    )


def all_ended(timeout: float) -> None:
    wait_for(lambda: not Execution.objects.running().exists(), timeout=timeout, interval=0.2)


def first_start_after(execution_id: str, moment: float, step: str | None = None) -> float:
    """When a body of the execution (of `step`) next started after `moment`: its progress."""
    return wait_for(
        lambda: next((run.at for run in starts(execution_id, step) if run.at > moment), None),
        timeout=30,
        interval=0.01,
    )


def pid_of(worker_id: str) -> int:
    return int(worker_id.split(":")[1])


def within(run: Mark, attempt: object, until: float) -> bool:
    """`run` is a body start of `attempt`: its worker's process, after the attempt's row (a
    few ms of tolerance for the database clock's offset) and before the next attempt."""
    return pid_of(attempt.worker) == run.pid and attempt.started_at - 0.05 <= run.at < until


def ends(execution_id: str, step: str) -> list[Mark]:
    return [found for found in marks(execution_id) if found.event == "end" and found.step == step]


# --- kill -9 at random points ----------------------------------------------------------------
# Shared with tests/test_faults_scaleout.py: a Store reads the back end the workers write.


@dataclass(frozen=True, kw_only=True)
class AttemptRow:
    number: int
    status: str
    error_type: str
    worker: str
    started_at: float


@dataclass(frozen=True, kw_only=True)
class StepRow:
    name: str
    status: str
    output: object
    finished_at: float | None
    wake_at: float | None
    attempts: list[AttemptRow]


@dataclass(frozen=True, kw_only=True)
class ExecutionRow:
    id: str
    status: str
    input: dict
    output: object
    error: object
    steps: list[StepRow]


class Store(Protocol):
    def trigger(self, binding: str, input: object) -> str: ...

    def running_count(self) -> int: ...

    def owners(self) -> set[str]:
        """The workers that own a running execution now."""

    def running_attempts(self, worker_ids: list[str]) -> list[tuple[str, str, int]]:
        """(execution id, step name, attempt number) of these workers' `running` attempts."""

    def executions(self, ids: list[str]) -> list[ExecutionRow]: ...


class DjangoStore:
    """The test's own database, through the ORM (the SQLite file the workers share)."""

    def trigger(self, binding: str, input: object) -> str:
        return runtime.trigger(binding, input).execution_id

    def running_count(self) -> int:
        return Execution.objects.running().count()

    def owners(self) -> set[str]:
        running = Execution.objects.running().filter(owner__isnull=False)
        return set(running.values_list("owner", flat=True))

    def running_attempts(self, worker_ids: list[str]) -> list[tuple[str, str, int]]:
        running = Attempt.objects.filter(worker__in=worker_ids, status="running")
        rows = running.values_list("step__execution_id", "step__name", "number")
        return [(str(execution_id), step, number) for execution_id, step, number in rows]

    def executions(self, ids: list[str]) -> list[ExecutionRow]:
        found = Execution.objects.filter(id__in=ids).prefetch_related("steps__attempts")
        return [
            ExecutionRow(
                id=str(execution.id),
                status=execution.status,
                input=execution.input,
                output=execution.output,
                error=execution.error,
                steps=[
                    StepRow(
                        name=step.name,
                        status=step.status,
                        output=step.output,
                        finished_at=seconds(step.finished_at),
                        wake_at=seconds(step.wake_at),
                        attempts=[
                            AttemptRow(
                                number=attempt.number,
                                status=attempt.status,
                                error_type=attempt.error_type,
                                worker=attempt.worker,
                                started_at=attempt.started_at.timestamp(),
                            )
                            for attempt in sorted(step.attempts.all(), key=lambda a: a.number)
                        ],
                    )
                    for step in sorted(execution.steps.all(), key=lambda step: step.position)
                ],
            )
            for execution in found
        ]


def seconds(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


@dataclass(frozen=True, kw_only=True)
class InFlight:
    execution_id: str
    step: str
    attempt: int
    body_started: bool  # False when the kill fell between the attempt's commit and its body


@dataclass(frozen=True, kw_only=True)
class Kill:
    at: float
    in_flight: list[InFlight]


def kill_and_look(store: Store, victim: Worker) -> Kill:
    """SIGKILL, then note the attempts it left `running`: nobody may touch them until the
    dead worker's timeout, so this is the state the kill left."""
    at = time.time()
    victim.kill()
    in_flight = [
        InFlight(
            execution_id=execution_id,
            step=step,
            attempt=number,
            body_started=len(starts(execution_id, step)) >= number,
        )
        for execution_id, step, number in store.running_attempts(victim.worker_ids)
    ]
    return Kill(at=at, in_flight=in_flight)


def kill_storm(
    start_worker: Callable[..., Worker],
    store: Store,
    *,
    kill_points: int,
    workers: int,
    environment: dict[str, str],
) -> None:
    """`workers` workers, one killed and replaced at each of `kill_points` seeded random
    moments, while about eight executions of a 7-step workflow with a sleep and a retry run at
    once (more are triggered as they end); then every execution is checked."""
    rng = random.Random(SEED)
    live = [start_worker(threads=2, **environment) for _ in range(workers)]
    ids: list[str] = []
    kills: list[Kill] = []
    started = time.monotonic()

    def top_up() -> None:
        while store.running_count() < 8:
            input = {"n": len(ids), "step_ms": rng.choice([80, 150, 250]), "sleep_ms": 300}
            ids.append(store.trigger("FAULT_CHAIN", input))

    def holding_work() -> list[Worker]:
        top_up()  # executions end while the storm waits for a replacement worker to start
        owners = store.owners()
        return [worker for worker in live if worker.is_ready and worker.worker_id in owners]

    while len(kills) < kill_points:
        top_up()
        time.sleep(rng.uniform(0.4, 1.4))
        # Kills come faster than the timeout, but not faster than workers start: on a loaded
        # machine a replacement can take seconds, and killing each one as soon as it claims
        # work leaves no worker alive long enough to lead, which no engine recovers from.
        wait_for(lambda: sum(not worker.is_ready for worker in live) <= 1, timeout=30)
        victim = rng.choice(wait_for(holding_work, timeout=20, interval=0.02))
        kills.append(kill_and_look(store, victim))
        live.remove(victim)
        live.append(start_worker(threads=2, ready=False, **environment))
    killing = time.monotonic() - started
    wait_for(lambda: store.running_count() == 0, timeout=60, interval=0.2)

    executions = store.executions(ids)
    assert len(executions) == len(ids)
    gave_up = {execution.id for execution in executions if check_chain(execution, kills)}
    assert len(gave_up) <= 1, gave_up  # five kills of one step in a row are already rare
    # (a given-up execution's last cut has no recovery to time)
    cut = [
        (kill, item)
        for kill in kills
        for item in kill.in_flight
        if item.execution_id not in gave_up
    ]
    recoveries = [first_start_after(item.execution_id, kill.at) - kill.at for kill, item in cut]
    # The kills come faster than the timeout: a recovery no later kill disturbed shows the
    # plain figure. A kill that lands before a dead worker is freed (of the leader, or of the
    # worker that took the execution over) delays it by up to another timeout.
    undisturbed = [
        recovery
        for (kill, _), recovery in zip(cut, recoveries, strict=True)
        if not any(kill.at < other.at < kill.at + recovery for other in kills)
    ]
    print(
        f"\n{kill_points} kills in {killing:.0f} s over {len(ids)} executions; {len(cut)} step "
        f"bodies cut off ({sum(not item.body_started for _, item in cut)} before they started)"
    )
    report(f"kill -9 -> the step in flight runs again (timeout {TEST_TIMEOUT:.0f} s)", recoveries)
    report("... of which no later kill disturbed", undisturbed)
    assert len(cut) >= kill_points / 2
    assert max(recoveries) <= 30
    assert max(undisturbed, default=0) <= TEST_TIMEOUT + 3


def check_chain(execution: ExecutionRow, kills: list[Kill]) -> bool:
    """The execution completed; each step body ran once, plus once per kill that cut it off
    (plus the planned failure of `flaky`); each run is an attempt; nothing ran after its step
    completed; and the attempt that completed names the worker whose output was kept.

    Or one step was cut off MAX_INTERRUPTED_ATTEMPTS times (the victims are picked at random
    among the workers holding work, so one execution can be hit again and again): it was given
    up as a step that keeps killing its worker, and the execution failed there; True then."""
    cut_off = [cut for kill in kills for cut in kill.in_flight if cut.execution_id == execution.id]
    cuts = Counter(cut.step for cut in cut_off)
    steps = execution.steps
    gave_up = any(cuts[step.name] >= MAX_INTERRUPTED_ATTEMPTS for step in steps)
    if gave_up:
        last = steps[-1]
        assert cuts[last.name] == MAX_INTERRUPTED_ATTEMPTS, (execution.id, cuts)
        assert execution.status == "failed", (execution.id, execution.error)
        assert "WorkerLost: the worker running this step stopped" in execution.error["message"]
        lost = [attempt for attempt in last.attempts if attempt.error_type == "WorkerLost"]
        assert last.status == "failed" and len(lost) == MAX_INTERRUPTED_ATTEMPTS, last
        steps = steps[:-1]
    else:
        assert execution.status == "completed", (execution.id, execution.error)
        assert execution.output == {"steps": CHAIN_NAMES, "n": execution.input["n"]}
        assert [step.name for step in steps] == list(CHAIN_STEPS)
    for step in steps:
        assert step.status == "completed", (execution.id, step.name)
        if step.name.startswith("sleep:"):
            continue
        attempts = step.attempts
        runs = starts(execution.id, step.name)
        here = [cut for cut in cut_off if cut.step == step.name]
        never_started = sum(not cut.body_started for cut in here)
        lost = [attempt for attempt in attempts if attempt.error_type == "WorkerLost"]
        raised = [attempt for attempt in attempts if attempt.error_type == "RuntimeError"]
        where = (execution.id, step.name, attempts, here)
        assert len(lost) == len(here), where  # a WorkerLost attempt for each kill, no other
        assert len(raised) <= (step.name == "flaky"), where
        assert len(attempts) == 1 + len(lost) + len(raised), where
        assert [a.status for a in attempts] == ["failed"] * (len(attempts) - 1) + ["completed"]
        # Every run of a body is an attempt, by the same worker, within that attempt's time;
        # an attempt without a run was cut off between its row and its body (WorkerLost).
        # (Counting at kill time cannot tell: an earlier attempt that never ran shifts it.)
        ends_at = [attempt.started_at for attempt in attempts[1:]] + [float("inf")]
        windows = list(zip(attempts, ends_at, strict=True))
        for run in runs:
            assert any(within(run, attempt, until) for attempt, until in windows), where
        for attempt, until in windows:
            ran = [run for run in runs if within(run, attempt, until)]
            assert len(ran) <= 1, where
            assert ran or attempt.error_type == "WorkerLost", where
        assert len(runs) >= len(attempts) - never_started, where
        assert all(run.at < step.finished_at for run in runs), where  # none after it completed
        assert pid_of(attempts[-1].worker) == step.output["pid"], where
        assert all(attempt.worker for attempt in attempts), where
    if len(steps) > len(CHAIN_BEFORE_SLEEP) + 1:
        sleep, after = steps[len(CHAIN_BEFORE_SLEEP) : len(CHAIN_BEFORE_SLEEP) + 2]
        assert after.attempts[0].started_at >= sleep.wake_at  # a kill never shortens the sleep
    return gave_up


def test_kill_9_at_30_random_points_repeats_only_the_step_in_flight(start_worker):
    kill_storm(
        start_worker,
        DjangoStore(),
        kill_points=KILL_POINTS,
        workers=4,
        # A kill between taking a message and claiming its execution is found by the leader's
        # sweep after the worker is declared dead (a test below).
        environment={},
    )


# --- workers racing --------------------------------------------------------------------------

RACE_QUEUED = 2600
RACE_API_THREADS = 4
RACE_API_EACH = 100


def test_three_workers_race_over_3000_executions_while_the_api_triggers_more(start_worker):
    """3 workers x 4 threads; 2,600 executions triggered from here as fast as they go, and 400
    more through the HTTP API from 4 threads at the same time. Two steps each."""
    # The default worker timeout: a worker starved of CPU for 2 s would be declared dead.
    workers = [
        start_worker(threads=4, PLOY_WORKER_TIMEOUT_SECONDS=DEFAULT_TIMEOUT) for _ in range(3)
    ]

    def through_the_api(thread: int) -> list[str]:
        client = Client()
        ids = []
        try:
            for n in range(RACE_API_EACH):
                body = json.dumps({"n": f"api-{thread}-{n}"})
                answer = client.post(
                    "/api/workflows/FAULT_QUICK/trigger", body, content_type="application/json"
                )
                assert answer.status_code == 202, answer.content
                ids.append(answer.json()["executionId"])
        finally:
            connection.close()
        return ids

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=RACE_API_THREADS) as pool:
        from_api = pool.map(through_the_api, range(RACE_API_THREADS))
        ids = [runtime.trigger("FAULT_QUICK", {"n": n}).execution_id for n in range(RACE_QUEUED)]
        ids += [execution_id for batch in from_api for execution_id in batch]
    assert len(set(ids)) == RACE_QUEUED + RACE_API_THREADS * RACE_API_EACH
    all_ended(timeout=120)
    elapsed = time.monotonic() - started

    assert Execution.objects.filter(status="completed").count() == len(ids)
    twice = [
        (execution_id, runs)
        for execution_id in ids
        if (runs := Counter(run.step for run in starts(execution_id))) != {"a": 1, "b": 1}
    ]
    assert not twice, twice[:5]
    assert Attempt.objects.count() == 2 * len(ids)
    assert not Attempt.objects.exclude(status="completed").exists()
    for worker in workers:
        log = worker.log.read_text()
        assert "database is locked" not in log
        assert "deadlock" not in log.lower()
        assert "Traceback" not in log, log[-3000:]
        assert "engine write failed" not in log
    ran = Counter(pid_of(owner) for owner in Attempt.objects.values_list("worker", flat=True))
    assert len(ran) == 3, ran  # all three took part
    print(f"\n{len(ids)} executions on 3 workers x 4 threads in {elapsed:.1f} s; by pid: {ran}")


# --- SIGSTOP past the timeout ----------------------------------------------------------------


def test_a_frozen_worker_loses_its_execution_and_its_late_write_is_refused(start_worker):
    frozen = start_worker(threads=1)
    execution_id = runtime.trigger("FAULT_HOLD", {"seconds": [3, 3]}).execution_id
    wait_for(lambda: starts(execution_id, "long"))
    other = start_worker(threads=1)
    frozen.freeze()
    frozen_at = time.time()
    # past the timeout the other worker frees the execution and runs the step again
    taken_at = first_start_after(execution_id, frozen_at, "long")
    assert [run.pid for run in starts(execution_id, "long")] == [frozen.pid, other.pid]
    frozen.thaw()  # its body ends at once (its sleep is over) and tries to record its output
    late = wait_for(lambda: [e.at for e in ends(execution_id, "long") if e.pid == frozen.pid])
    wait_for(lambda: Execution.objects.get(id=execution_id).is_finished, timeout=20)

    execution = Execution.objects.get(id=execution_id)
    assert execution.status == "completed"
    assert late[0] > taken_at  # its body did finish, while the other worker held the step
    assert execution.output == {"first": frozen.pid, "long": other.pid, "last": other.pid}
    long = Step.objects.get(execution=execution, name="long")
    assert long.output["pid"] == other.pid
    assert [(a.number, a.status, a.error_type, a.worker) for a in long.attempts.all()] == [
        (1, "failed", "WorkerLost", frozen.worker_ids[0]),
        (2, "completed", "", other.worker_id),
    ]
    # The frozen worker noticed: it signed on again under a new id, and it is still serving.
    wait_for(lambda: len(frozen.worker_ids) == 2)
    assert frozen.process.poll() is None
    assert WorkerRow.objects.get(id=frozen.worker_ids[0]).status == WorkerStatus.DEAD
    assert WorkerRow.objects.get(id=frozen.worker_ids[1]).status == WorkerStatus.ALIVE
    report("SIGSTOP -> the other worker runs the step again", taken_at - frozen_at)


# --- SIGTERM ---------------------------------------------------------------------------------


def test_sigterm_lets_the_step_finish_and_hands_over_within_2_seconds(start_worker):
    leaving = start_worker(threads=1)
    execution_id = runtime.trigger("FAULT_HOLD", {"seconds": [4]}).execution_id
    wait_for(lambda: starts(execution_id, "long"))
    # SIGTERM at once, mid-step: under load a worker can take longer to start than the step
    staying = start_worker(threads=1, ready=False)
    leaving.terminate()
    assert not ends(execution_id, "long")
    staying.wait_ready()
    ready_at = time.time()  # the hand-over is timed from when a worker could take it
    # no new work for a stopping worker
    wait_for(lambda: WorkerRow.objects.get(id=leaving.worker_id).status == WorkerStatus.STOPPING)
    newcomer = runtime.trigger("FAULT_HOLD", {"seconds": [0]}).execution_id

    leaving.process.wait(timeout=15)
    assert leaving.process.returncode == 0, leaving.log.read_text()[-3000:]
    wait_for(lambda: Execution.objects.get(id=execution_id).is_finished, timeout=15)
    execution = Execution.objects.get(id=execution_id)
    assert execution.status == "completed"
    assert execution.output == {"first": leaving.pid, "long": leaving.pid, "last": staying.pid}
    long = Step.objects.get(execution=execution, name="long")
    assert [(a.status, a.error_type, a.worker) for a in long.attempts.all()] == [
        ("completed", "", leaving.worker_id)
    ]
    assert len(starts(execution_id, "long")) == 1
    (body_end,) = [end.at for end in ends(execution_id, "long")]
    (next_start,) = [m.at for m in starts(execution_id, "last")]
    hand_over = next_start - max(body_end, ready_at)
    assert next_start > body_end and hand_over <= 2.0
    assert WorkerRow.objects.get(id=leaving.worker_id).status == WorkerStatus.DEAD
    wait_for(lambda: Execution.objects.get(id=newcomer).is_finished, timeout=15)
    assert {run.pid for run in starts(newcomer)} == {staying.pid}
    report("SIGTERM -> end of the step body to the next step on another worker", hand_over)


def test_a_second_sigterm_stops_at_once_and_the_step_runs_again_elsewhere(start_worker):
    leaving = start_worker(threads=1)
    execution_id = runtime.trigger("FAULT_HOLD", {"seconds": [60, 0]}).execution_id
    wait_for(lambda: starts(execution_id, "long"))
    # SIGTERM at once, mid-step: under load a worker can take longer to start than the step
    staying = start_worker(threads=1, ready=False)
    leaving.terminate()
    assert not ends(execution_id, "long")
    staying.wait_ready()
    wait_for(lambda: "Shutting down gracefully" in leaving.log.read_text())
    leaving.terminate()
    signalled = time.time()
    leaving.process.wait(timeout=5)
    exited = time.time()

    resumed = first_start_after(execution_id, signalled, "long")
    wait_for(lambda: Execution.objects.get(id=execution_id).is_finished, timeout=15)
    execution = Execution.objects.get(id=execution_id)
    assert execution.status == "completed"
    assert execution.output["long"] == staying.pid
    long = Step.objects.get(execution=execution, name="long")
    assert [(a.status, a.error_type, a.worker) for a in long.attempts.all()] == [
        ("failed", "WorkerLost", leaving.worker_id),
        ("completed", "", staying.worker_id),
    ]
    assert resumed <= exited + TEST_TIMEOUT + 2
    report("second SIGTERM -> the process exits", exited - signalled)
    report("second SIGTERM -> the step runs again on another worker", resumed - signalled)


@pytest.mark.parametrize("how", ["second SIGTERM", "past PLOY_SHUTDOWN_SECONDS"])
def test_a_step_cut_off_by_a_forced_stop_never_runs_twice_at_once(start_worker, how):
    """The cut-off body keeps ticking until its process is gone (its exit takes 1 s more, as
    with an atexit hook); no other worker may start that step before the last tick."""
    leaving = start_worker(threads=1, PLOY_SHUTDOWN_SECONDS="1")
    execution_id = runtime.trigger("FAULT_TICKER", {"seconds": 60, "exit_seconds": 1}).execution_id
    wait_for(lambda: starts(execution_id, "ticking"))
    staying = start_worker(threads=1)
    leaving.terminate()
    if how == "second SIGTERM":
        wait_for(lambda: "Shutting down gracefully" in leaving.log.read_text())
        leaving.terminate()
    leaving.process.wait(timeout=10)
    wait_for(lambda: Execution.objects.get(id=execution_id).is_finished, timeout=15)

    assert Execution.objects.get(id=execution_id).output == staying.pid
    ticks = [m.at for m in marks(execution_id) if m.event == "tick"]
    (again,) = [run.at for run in starts(execution_id, "ticking") if run.pid == staying.pid]
    assert again > max(ticks), f"started {max(ticks) - again:.2f} s before the last tick"


# --- recovery with the default timeout -------------------------------------------------------


@pytest.mark.parametrize("backlog", [0, 1000])
def test_recovery_after_kill_9_with_the_default_timeout_is_within_10_seconds(start_worker, backlog):
    """PLOY_WORKER_TIMEOUT_SECONDS=5, the default; with a backlog of new executions queued
    ahead, the freed execution must jump it (it is queued with priority)."""
    victim = start_worker(threads=1, PLOY_WORKER_TIMEOUT_SECONDS=DEFAULT_TIMEOUT)
    execution_id = runtime.trigger("FAULT_HOLD", {"seconds": [60, 0]}).execution_id
    wait_for(lambda: starts(execution_id, "long"))
    # The victim's only thread is busy, so the backlog waits in the queue.
    queued = [
        runtime.trigger("FAULT_QUICK", {"n": n, "ms": 30}).execution_id for n in range(backlog)
    ]
    start_worker(threads=2, PLOY_WORKER_TIMEOUT_SECONDS=DEFAULT_TIMEOUT)
    killed_at = time.time()
    victim.kill()

    resumed = first_start_after(execution_id, killed_at, "long")
    recovery = resumed - killed_at
    still_waiting = sum(not starts(queued_id) for queued_id in queued)
    wait_for(lambda: Execution.objects.get(id=execution_id).is_finished, timeout=15)
    assert Execution.objects.get(id=execution_id).status == "completed"
    assert recovery <= 10
    if backlog:
        assert still_waiting > backlog / 2  # it did not wait its turn behind them
    where = f"backlog of {backlog}, {still_waiting} still queued" if backlog else "no backlog"
    report(f"kill -9 -> step runs again, SQLite, default timeout, {where}", recovery)


def test_an_execution_whose_message_died_with_its_worker_resumes_within_10_seconds(
    start_worker,
):
    """The victim's one thread runs a long step; it took the next message off the queue and
    was killed before claiming that execution (the message is taken here, as its `dequeue()`
    did). Both executions must resume within 10 s with the defaults."""
    defaults = {
        "PLOY_WORKER_TIMEOUT_SECONDS": DEFAULT_TIMEOUT,
        "PLOY_SWEEP_SECONDS": "60",
        "PLOY_SWEEP_GRACE_SECONDS": "10",
    }
    victim = start_worker(threads=1, **defaults)
    held = runtime.trigger("FAULT_HOLD", {"seconds": [60, 0]}).execution_id
    wait_for(lambda: starts(held, "long"))
    taken = runtime.trigger("FAULT_QUICK", {"n": 1}).execution_id
    assert HUEY.dequeue().args == (taken,)
    start_worker(threads=2, **defaults)
    killed_at = time.time()
    victim.kill()

    assert first_start_after(held, killed_at, "long") - killed_at <= 10
    wait_for(lambda: starts(taken), timeout=max(0, killed_at + 10 - time.time()))


def test_a_message_that_comes_just_before_the_wake_time_is_never_dropped():
    """A message a few ms early, as when the triggering process's clock reads ahead (its first
    reading of the database's clock counts the connection's set-up): the claim finds the
    execution not due yet, so the message must be queued again for the wake time."""
    rng = random.Random(SEED)
    dropped = 0
    for n in range(300):
        execution_id = runtime.trigger("FAULT_QUICK", {"n": n}).execution_id
        HUEY.flush()  # its message is delivered by hand, early
        ahead = timedelta(microseconds=rng.randint(0, 3000))
        Execution.objects.filter(id=execution_id).update(wake_at=clock.now() + ahead)
        runtime.run_execution(execution_id)
        claimed = Execution.objects.filter(id=execution_id, run_count__gt=0).exists()
        dropped += not claimed and HUEY.pending_count() + HUEY.scheduled_count() == 0
    assert dropped == 0, f"{dropped} of 300 early messages dropped"
