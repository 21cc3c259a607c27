"""`step`: step.run() and step.sleep(), memoized against the execution's Step rows."""

from __future__ import annotations

import contextvars
import inspect
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from django.db import connections

from engine import attempt_logs, step_rows, workers
from engine.claims import Abandon, Claim, EngineUnavailable, Release, Suspend
from engine.config import check_retries
from engine.errors import (
    CodeChanged,
    NonRetryableError,
    PloyError,
    RetryAfter,
    StepFailed,
    StepMisuse,
    StepTimeout,
)
from engine.models import Attempt, AttemptStatus, Execution, Step, StepStatus
from engine.payloads import error_details, to_json
from engine.waits import WaitingSteps

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0
SLEEP_PREFIX = "sleep:"
PATCH_PREFIX = "patched:"
MAX_CHANGE_ID_LENGTH = 100
# A step whose worker died this many times (killed, out of memory...) fails instead of looping.
MAX_INTERRUPTED_ATTEMPTS = 5

T = TypeVar("T")


def retry_delay(failures: int) -> timedelta:
    """About 1 s before the first retry, doubling each time, capped at 30 s."""
    return timedelta(seconds=min(FIRST_RETRY_SECONDS * 2 ** (failures - 1), MAX_RETRY_SECONDS))


class StepContext(WaitingSteps):
    """The `step` argument of a handler; one per run of an execution."""

    def __init__(
        self,
        *,
        execution: Execution,
        steps: list[Step],
        retries: int,
        claim: Claim,
        clock: Callable[[], datetime],
        deadline: datetime | None = None,
        on_deadline: Callable[[], Exception] | None = None,
    ) -> None:
        self._execution = execution
        self._steps = {step.name: step for step in steps}
        self._retries = retries
        self._claim = claim
        self._clock = clock
        self._deadline = deadline  # the binding's timeout: past it, no step starts
        self._on_deadline = on_deadline
        self._sleeps = 0
        self._used: set[str] = set()  # names reached in this run: each may be used once
        # The names stored by position (parallel branches aside, whose order is the threads'):
        # a replay must reach the same names in the same order.
        self._stored_order = [step.name for step in steps if not step.branch_of]
        self._reached = 0
        self._positions = len(steps)
        self._lock = threading.RLock()  # parallel branches share the names and positions
        self._local = threading.local()  # the step whose fn this thread is calling
        # Once the run must end (suspend, abandon, hand-over, engine error), every later step
        # call re-raises it, and the runtime checks it whatever the handler did meanwhile.
        self.latched: BaseException | None = None

    def reraise_latched(self) -> None:
        if self.latched is not None:
            raise self.latched

    def _latch(self, signal: BaseException) -> BaseException:
        self.latched = signal
        return signal

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[None]:
        """A fenced engine transaction; losing the claim or the database latches the run."""
        try:
            with self._claim.hold(durable=durable):
                yield
        except (Abandon, EngineUnavailable) as signal:
            raise self._latch(signal) from None

    def _enter(self, name: str, call: str, *, positioned: bool = True) -> None:
        """Checks at every step boundary, before anything of the step runs. `positioned`: the
        step takes the next position (not a parallel branch, nor an empty fan-out)."""
        self.reraise_latched()
        self._check_not_nested(call)
        deadline, on_deadline = self._deadline, self._on_deadline
        if deadline is not None and on_deadline is not None and self._clock() >= deadline:
            raise self._latch(on_deadline())  # latched: the execution fails
        with self._lock:
            if name in self._used:
                raise StepMisuse(
                    f"step name {name!r} is used twice in this execution: names identify steps, "
                    f'so give each call its own name (e.g. f"{name}:{{item}}")'
                )
            self._used.add(name)
            if positioned:
                self._skip_dropped_markers(name)
                position, self._reached = self._reached, self._reached + 1
                stored = self._stored_order[position : position + 1]
                if stored and stored[0] != name:
                    # Nothing of the new path may run: latched, the execution fails.
                    raise self._latch(CodeChanged(position, stored[0], name))

    def _skip_dropped_markers(self, name: str) -> None:
        """A stored `patched:` marker the code no longer reaches is passed over: the call was
        removed once its old branch was, and the steps after it are the same new path."""
        order, reached = self._stored_order, self._reached
        while (
            reached < len(order)
            and order[reached] != name
            and order[reached].startswith(PATCH_PREFIX)
        ):
            reached += 1
        self._reached = reached

    @property
    def _running(self) -> str | None:
        return getattr(self._local, "running", None)

    @_running.setter
    def _running(self, name: str | None) -> None:
        self._local.running = name

    def _next_position(self) -> int:
        with self._lock:
            self._positions += 1
            return self._positions - 1

    def run(
        self,
        name: str,
        fn: Callable[[], T],
        *,
        input: object = None,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> T:
        """Run `fn` once and persist its result; on a replay return the stored result.
        `timeout` (seconds) fails an attempt that runs longer (StepTimeout, retried)."""
        _check_step_name(name)
        if not callable(fn):
            raise TypeError(f"step.run({name!r}, fn): fn must be a function, got {fn!r}")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
                raise ValueError(
                    f"step.run({name!r}, timeout=...) must be a number of seconds > 0, "
                    f"got {timeout!r}"
                )
            fn = cast(Callable[[], T], _bounded(self, name, fn, timeout))
        self._enter(name, f"step.run({name!r})")
        # Typed as fn's result, though it is that result as read back from JSON.
        return cast(T, self._run_step(name, fn, input=input, retries=retries))

    def _run_step(
        self,
        name: str,
        fn: Callable[[], object],
        *,
        input: object,
        retries: int | None,
        branch_of: str = "",
    ) -> object:
        step = self._steps.get(name)
        if step is not None:
            if step.status == StepStatus.COMPLETED:
                return step.output
            self._check_can_run_again(step)
        step, attempt = self._start_attempt(name, step, input, retries, branch_of)
        self._running = name
        # what the body logs and prints, in this thread; on the attempt's row as it runs
        log = attempt_logs.AttemptLog(attempt=attempt)
        try:
            with log:
                value = fn()
        except Exception as error:
            # Misuse fails at once: a retry would only repeat it; so does what the step says.
            final = isinstance(error, StepMisuse | NonRetryableError)
            raise self._record_failure(step, attempt, error, final=final, logs=log.end()) from error
        finally:
            self._running = None
        try:
            output = to_json(_synchronous(name, value), f"the output of step {name!r}")
        except PloyError as error:
            # Retrying cannot make the same value serialisable: fail at once.
            raise self._record_failure(step, attempt, error, final=True, logs=log.end()) from None
        self._record_success(step, attempt, output, log.end())
        return output

    def log(self, message: str, **data: object) -> None:
        """A line in the log of the attempt running in this thread, with `data` (JSON; other
        values are stored as their repr()); outside a step body it raises StepMisuse."""
        attempt_logs.step_log(message, data)

    def _check_can_run_again(self, step: Step) -> None:
        """A stored step that has not completed: it failed, waits for its retry, or its
        workers kept dying (then it fails); else it may run again."""
        if step.status == StepStatus.FAILED:
            raise _step_failed(step)
        if step.wake_at is not None and step.wake_at > self._clock():
            raise self._latch(Suspend(step.wake_at))
        if step.attempt_count - step.failure_count >= MAX_INTERRUPTED_ATTEMPTS:
            raise self._give_up_interrupted(step)

    def _start_attempt(
        self, name: str, step: Step | None, input: object, retries: int | None, branch_of: str
    ) -> tuple[Step, int]:
        if retries is None:
            retries = self._retries
        else:
            retries = check_retries(f"step.run({name!r}, retries=...)", retries)
        snapshot = to_json(input, f"the input of step {name!r}")
        if workers.current().stopping.is_set():
            raise self._latch(Release())  # no new step bodies once the worker is stopping
        return self._begin_attempt(name, step, snapshot, retries, branch_of)

    def transaction(
        self, name: str, fn: Callable[[Any], object], *, db: str | None = None
    ) -> object:
        """Run `fn(database)` in one transaction that also commits the step's output, so its
        writes happen once even across a crash; `db` names an `env` database binding (None:
        Django's own database, `fn` getting its connection alias)."""
        from engine.transactions import run_transaction

        return run_transaction(self, name, fn, db=db)

    def _check_not_nested(self, call: str) -> None:
        if self._running is not None:
            raise StepMisuse(
                f"{call} was called inside step {self._running!r}: steps cannot be nested; "
                "call it from the handler"
            )

    def sleep(self, ms: float) -> None:
        """Durable: the run ends here and the execution is woken at the stored wake time."""
        if isinstance(ms, bool) or not isinstance(ms, int | float) or not ms >= 0 or math.isinf(ms):
            raise ValueError(f"step.sleep(ms) needs a number of milliseconds >= 0, got {ms!r}")
        self._sleep("step.sleep()", lambda now: now + timedelta(milliseconds=ms), {"ms": ms})

    def sleep_until(self, when: datetime | str) -> None:
        """Durable, until an aware datetime or an ISO 8601 string; recorded as a `sleep:N`."""
        until = _aware_time(when)
        self._sleep("step.sleep_until()", lambda now: until, {"until": until.isoformat()})

    def _sleep(
        self, call: str, wake_time: Callable[[datetime], datetime], input: dict[str, Any]
    ) -> None:
        self._sleeps += 1
        name = f"{SLEEP_PREFIX}{self._sleeps}"
        self._enter(name, call)
        step = self._steps.get(name)
        now = self._clock()
        if step is None:
            wake_at = wake_time(now)
            asleep = wake_at > now
            with self._write():
                self._steps[name] = Step.objects.create(
                    execution=self._execution,
                    name=name,
                    position=self._next_position(),
                    status=StepStatus.SLEEPING if asleep else StepStatus.COMPLETED,
                    input=input,
                    started_at=now,
                    finished_at=None if asleep else now,
                    wake_at=wake_at,
                )
            if asleep:
                raise self._latch(Suspend(wake_at))
            return
        if step.status == StepStatus.COMPLETED:
            return
        if step.wake_at is not None and step.wake_at > now:
            raise self._latch(Suspend(step.wake_at))
        with self._write():
            step.status = StepStatus.COMPLETED
            step.finished_at = now
            step.save(update_fields=["status", "finished_at"])

    def patched(self, change_id: str) -> bool:
        """True where the code after a change may run: an execution reaching this point for
        the first time (a `patched:<change_id>` marker is stored) or replaying its marker;
        False in one whose steps already went on past here under the old code (nothing is
        stored and no position is taken, so its old steps replay against the old branch)."""
        _check_change_id(change_id)
        name = f"{PATCH_PREFIX}{change_id}"
        self.reraise_latched()
        self._check_not_nested(f"step.patched({change_id!r})")
        with self._lock:
            if name in self._used:
                raise StepMisuse(
                    f"step.patched({change_id!r}) is called twice in this execution: give each "
                    "change its own id"
                )
            self._skip_dropped_markers(name)
            stored = self._stored_order[self._reached : self._reached + 1]
            if stored and stored[0] != name:
                self._used.add(name)
                return False  # this point ran under the old code
        self._enter(name, f"step.patched({change_id!r})")
        if name not in self._steps:
            now = self._clock()
            with self._write():
                self._steps[name] = Step.objects.create(
                    execution=self._execution,
                    name=name,
                    position=self._next_position(),
                    status=StepStatus.COMPLETED,
                    output=True,
                    started_at=now,
                    finished_at=now,
                )
        return True

    def parallel(self, name: str, fns: dict[str, Callable[[], object]]) -> dict[str, object]:
        """Run the functions at once on this worker, each a memoized step of its own (retried on
        its own); their outputs by key. One that fails for good fails the step once the others
        have finished."""
        from engine.parallel import run_parallel

        return run_parallel(self, name, fns)

    def _begin_attempt(
        self, name: str, step: Step | None, snapshot: object, retries: int, branch_of: str = ""
    ) -> tuple[Step, int]:
        now = self._clock()
        # "Attempt N runs" needs no disk flush of its own: the step's completion (durable) is
        # what a replay relies on, and an attempt cut off by a crash of the database server
        # itself runs again like any other.
        with self._write(durable=False):
            if step is None:
                step = step_rows.insert_step(
                    execution_id=self._execution.id,
                    name=name,
                    position=self._next_position(),
                    input=snapshot,
                    retries=retries,
                    now=now,
                    branch_of=branch_of,
                )
                self._steps[name] = step
            else:
                if step.attempt_count > step.failure_count:
                    _mark_interrupted(step, now)
                step.input, step.retries, step.wake_at = snapshot, retries, None
                step.attempt_count += 1
                step.save(update_fields=["input", "retries", "wake_at", "attempt_count"])
            attempt = step_rows.insert_attempt(step=step, now=now, worker=self._claim.owner)
        return step, attempt

    def _give_up_interrupted(self, step: Step) -> StepFailed:
        now = self._clock()
        with self._write():
            _mark_interrupted(step, now)
            step.status, step.finished_at = StepStatus.FAILED, now
            step.error = {
                "type": "WorkerLost",
                "message": f"the worker running this step stopped {MAX_INTERRUPTED_ATTEMPTS} "
                "times before it finished (killed, or out of memory?): giving up",
                "traceback": "",
            }
            step.save(update_fields=["status", "finished_at", "error"])
        return _step_failed(step)

    def _record_success(
        self,
        step: Step,
        attempt: int,
        output: object,
        logs: list[attempt_logs.LogLine] | None = None,
    ) -> None:
        now = self._clock()
        with self._write():
            step_rows.complete(step=step, attempt_id=attempt, output=output, now=now, logs=logs)
        step.status, step.output, step.finished_at = StepStatus.COMPLETED, output, now

    def _record_failure(
        self,
        step: Step,
        attempt: int,
        error: Exception,
        *,
        final: bool,
        logs: list[attempt_logs.LogLine] | None = None,
    ) -> BaseException:
        """Store the failed attempt; return what to raise: a Suspend to retry, else StepFailed."""
        now = self._clock()
        details = error_details(error)
        step.failure_count += 1
        retry = not final and step.failure_count <= step.retries
        with self._write():
            Attempt.objects.filter(pk=attempt).update(
                status=AttemptStatus.FAILED,
                error_type=details["type"],
                error_message=details["message"],
                error_traceback=details["traceback"],
                finished_at=now,
                logs=logs,
            )
            if retry:
                delay = retry_delay(step.failure_count)
                if isinstance(error, RetryAfter):
                    delay = timedelta(seconds=error.seconds)
                step.wake_at = now + delay
            else:
                step.status, step.error, step.finished_at = StepStatus.FAILED, details, now
            step.save(update_fields=["failure_count", "wake_at", "status", "error", "finished_at"])
        return self._latch(Suspend(step.wake_at)) if retry else _step_failed(step)


def _bounded(
    context: StepContext, name: str, fn: Callable[[], object], seconds: float
) -> Callable[[], object]:
    """`fn` on a thread of its own, given up after `seconds`: Python cannot stop a running
    function, so it goes on in the background and its late result is discarded."""

    def call() -> object:
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def target() -> None:
            context._running = name  # steps stay unnestable on this thread too
            try:
                outcome["value"] = fn()
            except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
                outcome["error"] = error
            finally:
                connections.close_all()
                done.set()

        # In a copy of this thread's context: what the body logs joins the attempt's log.
        runner = contextvars.copy_context().run
        thread = threading.Thread(target=runner, args=(target,), name=f"ploy-step-{name}")
        thread.daemon = True
        thread.start()
        if not done.wait(seconds):
            raise StepTimeout(name, seconds)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return call


def _synchronous(name: str, value: object) -> object:
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()  # never awaited, on purpose: no warning
        raise StepMisuse(
            f"step {name!r} returned an awaitable: step functions run synchronously; use a "
            "plain def (call asyncio.run() inside it for async code)"
        )
    return value


def _mark_interrupted(step: Step, now: datetime) -> None:
    """An attempt still `running` here was cut off by a worker that died."""
    Attempt.objects.filter(step=step, status=AttemptStatus.RUNNING).update(
        status=AttemptStatus.FAILED,
        error_type="WorkerLost",
        error_message="the worker stopped before this attempt finished; the step runs again",
        finished_at=now,
    )


def _step_failed(step: Step) -> StepFailed:
    error = step.error or {}
    return StepFailed(
        step.name, error.get("type", "Error"), error.get("message", ""), step.attempt_count
    )


def _check_step_name(name: object, call: str = "step.run") -> None:
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"{call}(name, fn): name must be a non-empty string, got {name!r}")
    if name.startswith(SLEEP_PREFIX):
        raise ValueError(f"step name {name!r} is reserved for step.sleep(): choose another name")
    if name.startswith(PATCH_PREFIX):
        raise ValueError(f"step name {name!r} is reserved for step.patched(): choose another name")


def _check_change_id(change_id: object) -> None:
    if not isinstance(change_id, str) or not change_id.strip():
        raise StepMisuse(f"step.patched(change_id) needs a non-empty string, got {change_id!r}")
    if len(change_id) > MAX_CHANGE_ID_LENGTH:
        raise StepMisuse(
            f"step.patched(change_id): {change_id[:20]!r}... is {len(change_id)} characters, "
            f"over {MAX_CHANGE_ID_LENGTH}: use a short id such as 'send-receipt-v2'"
        )


def _aware_time(when: object) -> datetime:
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"step.sleep_until(when): {when!r} is not an ISO 8601 time, e.g. "
                "'2030-01-01T09:00:00Z'"
            ) from None
    if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(
            f"step.sleep_until(when) needs an aware datetime or an ISO 8601 string with a time "
            f"zone, got {when!r}"
        )
    return when
