"""Runtime semantics, one execution run at a time in this process against the real database and
queue: memoization, retries and back-off, on_error, sleep, cancel, JSON checks, the sweep."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from engine import runtime
from engine.claims import claim
from engine.context import retry_delay
from engine.errors import (
    ExecutionAlreadyFinished,
    ExecutionNotFound,
    NotJSONSerializable,
    PayloadTooLarge,
    UnknownWorkflow,
)
from engine.models import Execution, Step
from tests.conftest import wait_for
from tests.workflows.app import calls

pytestmark = pytest.mark.django_db(transaction=True)


def start(binding: str, input: object = None) -> str:
    return runtime.trigger(binding, input).execution_id


def run(execution_id: str, after: float = 0) -> Execution:
    """One run, `after` seconds from now (time is passed in, never mocked)."""
    runtime.run_execution(execution_id, now=timezone.now() + timedelta(seconds=after))
    return Execution.objects.get(id=execution_id)


def steps(execution_id: str) -> dict[str, Step]:
    return {step.name: step for step in Step.objects.filter(execution_id=execution_id)}


def attempts(execution_id: str, name: str) -> list[tuple[int, str, str]]:
    step = Step.objects.get(execution_id=execution_id, name=name)
    return [(a.number, a.status, a.error_type) for a in step.attempts.order_by("number")]


def test_example_completes_with_the_guides_output():
    execution_id = start("DATA_FLOW", {"action": "double", "value": 21})
    execution = run(execution_id)
    assert execution.status == "completed"
    assert execution.output == {"action": "double", "originalValue": 21, "processedValue": 42}
    assert [s.name for s in Step.objects.filter(execution_id=execution_id)] == [
        "validate",
        "process",
        "store",
    ]
    assert execution.started_at <= execution.finished_at
    assert execution.owner is None and execution.wake_at is None


def test_completed_steps_are_not_run_again_on_replay():
    execution_id = start("DATA_FLOW", {"action": "double", "value": 21, "sleep_ms": 1000})
    assert run(execution_id).status == "running"
    assert steps(execution_id)["sleep:1"].status == "sleeping"
    assert calls(execution_id) == ["validate", "process"]

    with CaptureQueriesContext(connection) as queries:
        execution = run(execution_id, after=2)
    assert execution.status == "completed"
    assert calls(execution_id) == ["validate", "process", "store"]
    step_reads = [
        q
        for q in queries
        if q["sql"].startswith("SELECT")
        and "engine_step" in q["sql"]
        and "engine_execution" not in q["sql"].split("FROM")[1]
    ]
    assert len(step_reads) == 1, "a run loads its steps in one query"


def test_failed_step_is_retried_with_the_yaml_retries_and_backoff():
    execution_id = start("FLAKY", {"failures": 10})  # FLAKY has retries: 2
    before = timezone.now()
    execution = run(execution_id)
    step = steps(execution_id)["flaky"]
    assert execution.status == "running" and step.status == "running"
    assert timedelta(seconds=0.9) < step.wake_at - before < timedelta(seconds=2)
    assert execution.wake_at == step.wake_at
    # the next run is queued for the wake time, holding no worker thread meanwhile
    etas = [task.eta for task in HUEY.pending() if task.args == (execution_id,) and task.eta]
    assert len(etas) == 1
    assert abs(etas[0] - step.wake_at.replace(tzinfo=None)) < timedelta(milliseconds=50)

    assert run(execution_id, after=0.5).status == "running"  # not due yet: nothing runs
    assert len(calls(execution_id)) == 1
    run(execution_id, after=1.5)
    second_wait = steps(execution_id)["flaky"].wake_at - timezone.now()
    assert timedelta(seconds=2.5) < second_wait < timedelta(seconds=3.6)  # 1.5 s + 2 s
    execution = run(execution_id, after=10)
    assert execution.status == "failed"
    assert attempts(execution_id, "flaky") == [
        (1, "failed", "RuntimeError"),
        (2, "failed", "RuntimeError"),
        (3, "failed", "RuntimeError"),
    ]
    assert execution.error["type"] == "StepFailed"
    assert "step 'flaky' failed after 3 attempts: RuntimeError" in execution.error["message"]


def test_a_step_that_recovers_completes_with_its_failed_attempts_kept():
    execution_id = start("FLAKY", {"failures": 2})
    for after in (0, 2, 5):
        execution = run(execution_id, after=after)
    assert execution.status == "completed" and execution.output == {"ok": True}
    assert [a[1] for a in attempts(execution_id, "flaky")] == ["failed", "failed", "completed"]
    attempt = Step.objects.get(execution_id=execution_id).attempts.get(number=1)
    assert "failure number 1" in attempt.error_message
    assert "Traceback" in attempt.error_traceback and attempt.finished_at >= attempt.started_at


def test_per_step_retries_override_the_workflow():
    execution_id = start("FLAKY", {"failures": 1, "retries": 0})
    execution = run(execution_id)
    assert execution.status == "failed"
    assert len(attempts(execution_id, "flaky")) == 1


@pytest.mark.parametrize(
    ("failures", "seconds"), [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (9, 30)]
)
def test_backoff_doubles_from_one_second_up_to_thirty(failures, seconds):
    assert retry_delay(failures) == timedelta(seconds=seconds)


def test_on_error_runs_once_before_the_execution_fails():
    execution_id = start("FAILING")  # retries: 1
    assert run(execution_id).status == "running"
    assert calls(execution_id) == ["fine", "boom"]
    execution = run(execution_id, after=2)
    assert execution.status == "failed"
    assert calls(execution_id) == ["fine", "boom", "boom", "on_error:StepFailed"]
    run(execution_id, after=60)
    assert calls(execution_id).count("on_error:StepFailed") == 1
    assert (
        execution.error["type"] == "StepFailed"
        and "ZeroDivisionError" in execution.error["message"]
    )


def test_a_raising_on_error_is_recorded_and_ignored():
    execution = run(start("HOOK_RAISES"))
    assert execution.status == "failed"
    assert execution.error["type"] == "StepFailed"
    assert execution.error["onError"]["type"] == "RuntimeError"
    assert execution.error["onError"]["message"] == "the hook broke too"


def test_a_failure_decided_before_a_crash_runs_on_error_once_on_recovery():
    execution_id = start("FAILING")
    # the failure was recorded, then the worker died before on_error ran
    Execution.objects.filter(id=execution_id).update(
        error={"type": "StepFailed", "message": "decided", "traceback": ""}
    )
    execution = run(execution_id)
    assert execution.status == "failed" and execution.error["message"] == "decided"
    assert calls(execution_id) == ["on_error:RecordedFailure"]  # no step ran again
    run(execution_id, after=60)
    assert calls(execution_id) == ["on_error:RecordedFailure"]


def test_a_failing_execution_cannot_be_cancelled_once_its_hook_is_due():
    execution_id = start("FAILING")
    Execution.objects.filter(id=execution_id).update(
        error={"type": "StepFailed", "message": "decided", "traceback": ""}
    )
    with pytest.raises(ExecutionAlreadyFinished, match="failed"):
        runtime.cancel_execution(execution_id)
    assert run(execution_id).status == "failed"
    assert calls(execution_id) == ["on_error:RecordedFailure"]


def test_sleep_is_durable_and_named_in_order():
    execution_id = start("SLEEPER", {"ms": 500})
    before = timezone.now()
    run(execution_id)
    sleep = steps(execution_id)["sleep:1"]
    assert sleep.status == "sleeping" and sleep.input == {"ms": 500}
    assert timedelta(seconds=0.4) < sleep.wake_at - before < timedelta(seconds=1)
    assert run(execution_id, after=0.1).status == "running"
    assert steps(execution_id)["sleep:1"].status == "sleeping"
    execution = run(execution_id, after=1)
    assert execution.status == "completed" and execution.output == "done"
    assert [s.name for s in Step.objects.filter(execution_id=execution_id)] == [
        "before",
        "sleep:1",
        "after",
    ]
    assert calls(execution_id) == ["before", "after"]
    assert steps(execution_id)["sleep:1"].status == "completed"


def test_except_exception_in_a_handler_cannot_swallow_a_sleep():
    execution_id = start("SWALLOW")
    assert run(execution_id).status == "running"
    assert run(execution_id, after=1).output == "slept"


def test_cancel_before_the_first_run():
    execution_id = start("SLEEPER", {"ms": 10})
    assert runtime.cancel_execution(execution_id).status == "cancelled"
    assert run(execution_id).status == "cancelled"
    assert calls(execution_id) == []


def test_cancel_while_sleeping_means_it_never_runs_again():
    execution_id = start("SLEEPER", {"ms": 200})
    run(execution_id)
    execution = runtime.cancel_execution(execution_id)
    assert execution.status == "cancelled" and execution.finished_at is not None
    assert steps(execution_id)["sleep:1"].status == "cancelled"
    assert run(execution_id, after=5).status == "cancelled"
    assert calls(execution_id) == ["before"]


def test_cancel_while_waiting_to_retry():
    execution_id = start("FLAKY", {"failures": 10})
    run(execution_id)
    runtime.cancel_execution(execution_id)
    assert run(execution_id, after=5).status == "cancelled"
    assert steps(execution_id)["flaky"].status == "cancelled"
    assert len(calls(execution_id)) == 1


def test_cancel_while_running_stops_at_the_next_step_and_is_never_resurrected():
    execution_id = start("SELF_CANCEL")
    execution = run(execution_id)
    assert execution.status == "cancelled"
    assert calls(execution_id) == ["first"]  # "second" never ran
    # the worker's late write of "first" was refused
    assert steps(execution_id)["first"].status == "cancelled"
    assert attempts(execution_id, "first") == [(1, "failed", "Cancelled")]


def test_cancel_an_ended_or_unknown_execution():
    execution_id = start("DATA_FLOW", {"action": "double", "value": 1})
    run(execution_id)
    with pytest.raises(ExecutionAlreadyFinished, match="has already ended \\(completed\\)"):
        runtime.cancel_execution(execution_id)
    with pytest.raises(ExecutionNotFound):
        runtime.cancel_execution("01a21334-47e2-760f-ab92-ccba3a1076f6")
    with pytest.raises(ExecutionNotFound):
        runtime.cancel_execution("not-an-id")


def test_non_json_step_output_fails_the_step_at_once():
    execution_id = start("NOT_JSON")
    execution = run(execution_id)
    assert execution.status == "failed"
    assert attempts(execution_id, "weird") == [(1, "failed", "NotJSONSerializable")]
    assert calls(execution_id) == ["weird"]  # no retries, although the default is 3
    assert "the output of step 'weird' is not JSON-serialisable" in execution.error["message"]


def test_non_json_return_value_fails_the_execution():
    execution = run(start("BAD_RETURN"))
    assert execution.status == "failed"
    assert execution.error["type"] == "NotJSONSerializable"
    assert "the workflow's return value is not JSON-serialisable" in execution.error["message"]


def test_idempotency_key_returns_the_same_execution():
    first = runtime.trigger("SLEEPER", {"ms": 1}, idempotency_key="order-7")
    second = runtime.trigger("SLEEPER", {"ms": 2}, idempotency_key="order-7")
    assert first.created and not second.created
    assert first.execution_id == second.execution_id
    assert Execution.objects.count() == 1


def test_trigger_refuses_unknown_workflows_and_large_input(settings):
    with pytest.raises(UnknownWorkflow):
        runtime.trigger("GHOST", {})
    settings.PLOY_MAX_PAYLOAD_BYTES = 100
    with pytest.raises(PayloadTooLarge, match="the workflow input is 1\\d\\d bytes, over the 100"):
        runtime.trigger("SLEEPER", {"ms": "x" * 100})
    assert Execution.objects.count() == 0


def test_trigger_by_workflow_name_uses_its_binding():
    execution = Execution.objects.get(id=start("flaky", {"failures": 0}))
    assert (execution.binding, execution.workflow) == ("FLAKY", "flaky")


def test_rerun_starts_a_new_execution_with_the_same_input():
    original = start("DATA_FLOW", {"action": "square", "value": 3})
    run(original)
    rerun = runtime.rerun_execution(original).execution_id
    assert rerun != original
    execution = run(rerun)
    assert execution.input == {"action": "square", "value": 3}
    assert str(execution.rerun_of_id) == original and execution.status == "completed"


def test_two_claims_never_hold_the_same_execution():
    execution_id = Execution.objects.get(id=start("SLEEPER", {"ms": 1})).id
    now = timezone.now()
    first = claim(execution_id, "worker-a", now)
    assert first is not None and first.owner == "worker-a" and first.run_count == 1
    # held by a worker: nobody else may claim it, however late, until it is released
    assert claim(execution_id, "worker-b", now + timedelta(hours=1)) is None


def test_a_claim_queues_no_watchdog_message():
    execution_id = start("SLEEPER", {"ms": 60_000})
    HUEY.flush()
    run(execution_id)
    # only the sleep's wake-up: dead workers are found by their heartbeats, not per claim
    assert [task.args for task in HUEY.pending()] == [(execution_id,)]


def test_sweep_requeues_unowned_executions_that_are_or_soon_will_be_due():
    overdue = Execution.objects.get(id=start("SLEEPER", {"ms": 1})).id
    owned = Execution.objects.get(id=start("SLEEPER", {"ms": 1})).id
    sleeping = start("SLEEPER", {"ms": 600_000})
    run(sleeping)
    waking = start("SLEEPER", {"ms": 30_000})
    run(waking)
    later = timezone.now() + timedelta(seconds=5)
    claim(owned, "worker-a", later)
    HUEY.flush()
    assert runtime.sweep(now=later) == 1
    # the overdue one at once; the one waking before the next sweep at its wake time
    pending = {task.args[0]: task.eta for task in HUEY.pending()}
    assert set(pending) == {str(overdue), waking}
    assert pending[str(overdue)] is None
    wake_at = Execution.objects.get(id=waking).wake_at
    assert abs(pending[waking] - wake_at.replace(tzinfo=None)) < timedelta(milliseconds=50)


def test_sweep_gives_an_execution_due_this_moment_a_message_once_it_is_overdue_by_the_grace():
    """Its message may be on its way, so not at once; but if it was lost, the execution waits
    for the grace, not for the next sweep (a leader that took over just after a sleep's wake
    time found it neither overdue nor waking soon, and left it a whole sweep)."""
    just_due = start("SLEEPER", {"ms": 30_000})
    run(just_due)
    wake_at = Execution.objects.get(id=just_due).wake_at
    HUEY.flush()
    grace = timedelta(seconds=2)
    assert runtime.sweep(now=wake_at + timedelta(seconds=0.5), grace=grace) == 0
    [task] = HUEY.pending()
    assert task.args == (just_due,)
    assert abs(task.eta - (wake_at + grace).replace(tzinfo=None)) < timedelta(milliseconds=50)


def test_invalid_step_usage_fails_the_execution_with_a_clear_error():
    from engine.claims import Claim
    from engine.context import StepContext

    execution = Execution.objects.get(id=start("SLEEPER", {"ms": 1}))
    context = StepContext(
        execution=execution,
        steps=[],
        retries=3,
        claim=Claim(execution_id=execution.id, owner="x", epoch=1),
        clock=timezone.now,
    )
    with pytest.raises(ValueError, match="reserved for step.sleep"):
        context.run("sleep:1", lambda: 1)
    with pytest.raises(ValueError, match="must be a whole number >= 0, got -1"):
        context.run("a", lambda: 1, retries=-1)
    with pytest.raises(ValueError, match=r"must be at most 1000, got 3000000000: use a smaller"):
        context.run("b", lambda: 1, retries=3_000_000_000)
    with pytest.raises(TypeError, match="fn must be a function"):
        context.run("a", 42)
    with pytest.raises(ValueError, match="milliseconds >= 0, got -5"):
        context.sleep(-5)
    with pytest.raises(ValueError, match="must be a number of seconds > 0, got 0"):
        context.run("c", lambda: 1, timeout=0)


def test_nul_characters_are_refused_as_postgresql_would():
    with pytest.raises(NotJSONSerializable, match="NUL character"):
        runtime.trigger("SLEEPER", {"ms": 1, "note": "a\x00b"})


def test_cursors_must_be_well_formed():
    from engine.queries import InvalidQuery, decode_cursor, encode_cursor

    execution_id = Execution.objects.get(id=start("SLEEPER", {"ms": 1})).id
    assert decode_cursor(encode_cursor(execution_id)) == execution_id
    for bad in ("", "abc", "!" * 22, encode_cursor(execution_id) + "A"):
        with pytest.raises(InvalidQuery, match="pass the nextCursor of a previous page"):
            decode_cursor(bad)


@pytest.mark.parametrize(
    ("binding", "step_name", "message"),
    [
        ("NESTED", "outer", "step.run('inner') was called inside step 'outer': steps cannot be"),
        ("ASYNC_STEP", "fetch", "step 'fetch' returned an awaitable: step functions run sync"),
    ],
)
def test_step_misuse_fails_at_once_with_a_clear_error(binding, step_name, message):
    execution_id = start(binding)
    execution = run(execution_id)
    assert execution.status == "failed"
    assert attempts(execution_id, step_name) == [(1, "failed", "StepMisuse")]
    assert message in execution.error["message"]


def test_a_step_that_keeps_killing_its_worker_fails_instead_of_looping():
    from engine.context import MAX_INTERRUPTED_ATTEMPTS
    from engine.models import Attempt

    execution_id = start("FLAKY", {"failures": 0})
    step = Step.objects.create(
        execution_id=execution_id,
        name="flaky",
        position=0,
        status="running",
        attempt_count=MAX_INTERRUPTED_ATTEMPTS,
        started_at=timezone.now(),
    )
    Attempt.objects.create(
        step=step, number=MAX_INTERRUPTED_ATTEMPTS, status="running", started_at=timezone.now()
    )
    # as after five runs, each cut off by a dead worker
    Execution.objects.filter(id=execution_id).update(run_count=MAX_INTERRUPTED_ATTEMPTS)
    execution = run(execution_id)
    assert execution.status == "failed"
    assert "WorkerLost: the worker running this step stopped 5 times" in execution.error["message"]
    assert calls(execution_id) == []  # not tried a sixth time
    assert attempts(execution_id, "flaky") == [(5, "failed", "WorkerLost")]


def test_a_step_name_used_twice_fails_at_once_naming_it():
    execution = run(start("REUSED_NAME"))
    assert execution.status == "failed"
    assert execution.error["type"] == "StepMisuse"
    assert "'send_email' is used twice" in execution.error["message"]
    assert calls(execution.id) == ["send:alice"]  # one email, never 'alice' three times


def test_a_finally_around_a_sleep_runs_once_at_the_real_end():
    execution_id = start("FINALLY_SLEEP", {"ms": 1000})
    assert run(execution_id).status == "running"
    assert calls(execution_id) == ["acquire"]  # not `release` at the first sleep
    assert "release" not in steps(execution_id)
    assert run(execution_id, after=2).status == "completed"
    assert calls(execution_id) == ["acquire", "work", "release"]


def test_a_bare_except_cannot_shorten_a_durable_sleep():
    execution_id = start("BARE_EXCEPT_SLEEP", {"ms": 60_000})
    execution = run(execution_id)
    assert execution.status == "running"
    assert steps(execution_id)["sleep:1"].status == "sleeping"
    assert "after" not in steps(execution_id) and calls(execution_id) == ["swallowed"]
    assert execution.wake_at == steps(execution_id)["sleep:1"].wake_at
    assert run(execution_id, after=61).status == "completed"
    assert calls(execution_id) == ["swallowed", "after"]


def test_a_step_without_input_or_output_stores_sql_null_as_the_orm_does():
    execution_id = start("BARE_EXCEPT_SLEEP", {"ms": 10})
    run(execution_id)
    assert run(execution_id, after=1).status == "completed"
    after = Step.objects.filter(execution_id=execution_id, name="after")
    assert after.get().output is None
    assert after.filter(input__isnull=True, output__isnull=True).exists()


def test_an_engine_write_error_ends_the_run_without_failing_it():
    from engine import workers

    execution_id = start("ENGINE_WRITE_FAILS")
    try:
        execution = run(execution_id)
    finally:
        connection.cursor().execute("PRAGMA query_only = OFF")
    # the handler's `except Exception` never saw it; nothing was marked failed
    assert execution.status == "running" and execution.error is None
    assert calls(execution_id) == ["break"]
    assert steps(execution_id)["breaks"].status == "running"
    # the database answers again: the execution is released, runs again and completes
    workers.current().retry_releases()
    assert Execution.objects.get(id=execution_id).owner is None
    execution = run(execution_id)
    assert execution.status == "completed" and execution.output == "done"
    assert calls(execution_id) == ["break", "break"]
    assert attempts(execution_id, "breaks") == [(1, "failed", "WorkerLost"), (2, "completed", "")]


def test_a_claim_cut_off_after_its_update_is_handed_over_once_the_database_answers():
    """The claim's UPDATE commits and the connection drops before its read-back: the worker
    owns the execution without running it, and no sweep frees a live worker's executions."""
    from django.db import OperationalError

    from engine import workers

    execution_id = start("DATA_FLOW", {"action": "double", "value": 21})
    claimed: list[str] = []

    def cut_after_the_claim(execute, sql, params, many, context):
        if claimed:
            raise OperationalError("server closed the connection unexpectedly")
        if sql.startswith('UPDATE "engine_execution"') and "run_count" in sql:
            claimed.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(cut_after_the_claim):
        runtime.run_execution(execution_id)
    assert claimed and calls(execution_id) == []
    execution = Execution.objects.get(id=execution_id)
    assert execution.owner == workers.current().id and execution.status == "running"
    # the database answers again (the next duty tick): handed over, and it runs to the end
    workers.current().retry_releases()
    assert Execution.objects.get(id=execution_id).owner is None
    execution = run(execution_id, after=2)
    assert execution.status == "completed" and execution.output["processedValue"] == 42


def test_an_unsure_claim_is_left_to_the_thread_that_holds_or_is_claiming_it():
    from engine import workers

    worker = workers.current()
    execution_id = start("DATA_FLOW", {"action": "double", "value": 21})
    execution_uuid = Execution.objects.get(id=execution_id).id
    with worker.claiming(execution_uuid):
        claimed = claim(execution_uuid, worker.id)
        worker.release_if_claimed(execution_uuid)  # another thread's claim failed meanwhile
    assert Execution.objects.get(id=execution_id).owner == worker.id
    held = worker.hold(claimed)
    worker.release_if_claimed(execution_uuid)
    assert Execution.objects.get(id=execution_id).owner == worker.id
    worker.forget(held)
    worker.release_if_claimed(execution_uuid)  # now nobody runs it: handed over
    assert Execution.objects.get(id=execution_id).owner is None


def test_a_non_retryable_error_fails_the_step_at_once():
    execution = run(start("ERROR_KINDS", {"kind": "final"}))
    assert execution.status == "failed"
    assert attempts(execution.id, "charge") == [(1, "failed", "NonRetryableError")]
    assert "the card was declined" in execution.error["message"]


def test_retry_after_replaces_the_back_off():
    execution_id = start("ERROR_KINDS", {"kind": "later"})
    before = timezone.now()
    assert run(execution_id).status == "running"
    wake_at = steps(execution_id)["charge"].wake_at
    assert timedelta(seconds=9.9) < wake_at - before < timedelta(seconds=11)
    assert run(execution_id, after=5).status == "running"  # not before its time
    execution = run(execution_id, after=11)
    assert execution.status == "completed" and execution.output == "ok"
    assert attempts(execution_id, "charge") == [(1, "failed", "RetryAfter"), (2, "completed", "")]


def test_retry_after_refuses_a_negative_delay():
    from engine import RetryAfter

    with pytest.raises(ValueError, match="seconds >= 0, got -1"):
        RetryAfter(-1)


def deploy(execution_id: str, names: str) -> None:
    from tests.workflows.app import counts_dir

    (counts_dir() / f"{execution_id}.names").write_text(names)


@pytest.mark.parametrize(
    ("before", "after", "position", "stored", "reached"),
    [
        ("a b c", "a x c", 2, "b", "x"),  # renamed
        ("a b c", "b a c", 1, "a", "b"),  # reordered
        ("a b c", "a c", 2, "b", "c"),  # removed
    ],
)
def test_a_step_renamed_reordered_or_removed_in_flight_fails_with_code_changed(
    before, after, position, stored, reached
):
    execution_id = start("CODE_CHANGE")
    deploy(execution_id, before)
    assert run(execution_id).status == "running"  # asleep after two steps
    deploy(execution_id, after)
    execution = run(execution_id, after=2)
    assert execution.status == "failed" and execution.error["type"] == "CodeChanged"
    message = execution.error["message"]
    assert f"step {position} was {stored!r} and is now {reached!r}" in message
    assert calls(execution_id) == before.split()[:2]  # nothing of the new path ran


def test_steps_past_the_stored_ones_are_simply_new():
    execution_id = start("CODE_CHANGE")
    deploy(execution_id, "a b c")
    run(execution_id)
    deploy(execution_id, "a b c d")
    execution = run(execution_id, after=2)
    assert execution.status == "completed" and calls(execution_id) == ["a", "b", "c", "d"]


def test_a_step_over_its_timeout_fails_with_step_timeout_and_is_retried():
    execution_id = start("TIMED", {"first_seconds": 1.5, "timeout": 0.3})
    assert run(execution_id).status == "running"
    assert attempts(execution_id, "timed") == [(1, "failed", "StepTimeout")]
    execution = run(execution_id, after=3)
    assert execution.status == "completed" and execution.output == "on time"
    wait_for(lambda: "late" in calls(execution_id), timeout=5)  # the first body ran on...
    assert Execution.objects.get(id=execution_id).output == "on time"  # ...its result discarded


def test_an_execution_past_its_binding_timeout_fails_with_timeout_and_runs_on_error():
    execution_id = start("BOUNDED", {"ms": 60_000})
    execution = run(execution_id)
    assert execution.status == "running"
    created = execution.created_at
    # it sleeps until its timeout at the latest, not the 60 s asked
    assert abs((execution.wake_at - created).total_seconds() - 2) < 0.1
    execution = run(execution_id, after=2.5)
    assert execution.status == "failed" and execution.error["type"] == "Timeout"
    assert "2 s timeout of BOUNDED" in execution.error["message"]
    assert calls(execution_id) == ["before", "on_error:Timeout"]


def test_no_step_starts_past_the_timeout():
    execution_id = start("BOUNDED", {"ms": 1})
    execution = run(execution_id, after=3)  # claimed late: it fails before any step
    assert execution.status == "failed" and execution.error["type"] == "Timeout"
    assert calls(execution_id) == ["on_error:Timeout"]
