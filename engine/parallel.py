"""`step.parallel`: branches that run at once on the worker, each a memoized step of its own.

The parallel step `name` groups its branches, steps named `name[key]`; a bounded pool of
threads runs the branches not completed yet (a replay skips the completed ones). Each branch
has its own attempts and retries; the group completes with every output once all have, fails
once one has failed for good and the others have finished, and waits for the earliest retry
otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, TypeGuard, cast

from django.db import connections

from engine.claims import Suspend
from engine.errors import StepFailed
from engine.models import Step, StepStatus

if TYPE_CHECKING:
    from engine.context import StepContext

MAX_THREADS = 8


def branch_name(name: str, key: str) -> str:
    return f"{name}[{key}]"


def run_parallel(
    context: StepContext, name: str, fns: dict[str, Callable[[], object]]
) -> dict[str, object]:
    from engine.context import _check_step_name

    _check_step_name(name)
    _check_branches(name, fns)
    context._enter(name, f"step.parallel({name!r})")
    group = context._steps.get(name)
    if group is not None and group.status == StepStatus.COMPLETED:
        return cast(dict[str, object], group.output)
    if group is not None and group.status == StepStatus.FAILED:
        raise _failed(group)
    for key in fns:
        context._enter(branch_name(name, key), f"step.parallel({name!r})", positioned=False)
    if group is None:
        group = _start_group(context, name, list(fns))
    outcomes = _run_branches(context, name, fns)
    for outcome in outcomes.values():
        if _is_signal(outcome):
            raise outcome  # a branch lost the claim or the database, or the worker stops
    retries = [
        outcome.wake_at
        for outcome in outcomes.values()
        if isinstance(outcome, Suspend) and outcome.wake_at is not None
    ]
    if retries:  # the group waits until every branch has finished, for the earliest retry
        context.latched = None
        raise context._latch(Suspend(min(retries)))
    failures = [outcome for outcome in outcomes.values() if isinstance(outcome, StepFailed)]
    if failures:
        raise cast(StepFailed, _finish_group(context, group, error=failures[0]))
    return cast(dict[str, object], _finish_group(context, group, output=outcomes))


def _check_branches(name: str, fns: object) -> None:
    if not isinstance(fns, dict) or not fns:
        raise TypeError(f"step.parallel({name!r}, fns): fns must be a non-empty dict of functions")
    for key, fn in fns.items():
        if not isinstance(key, str) or not key or "[" in key or "]" in key:
            raise TypeError(
                f"step.parallel({name!r}): each key must be a non-empty string without "
                f"brackets, got {key!r}"
            )
        if not callable(fn):
            raise TypeError(f"step.parallel({name!r}): {key!r} must be a function, got {fn!r}")


def _start_group(context: StepContext, name: str, keys: list[str]) -> Step:
    now = context._clock()
    with context._write():
        group = Step.objects.create(
            execution=context._execution,
            name=name,
            position=context._next_position(),
            status=StepStatus.RUNNING,
            input={"branches": keys},
            started_at=now,
        )
    context._steps[name] = group
    return group


def _run_branches(
    context: StepContext, name: str, fns: dict[str, Callable[[], object]]
) -> dict[str, object]:
    """Each branch's output, or what it raised (StepFailed, or Suspend for a retry)."""

    def branch(key: str) -> object:
        try:
            return context._run_step(
                branch_name(name, key), fns[key], input=None, retries=None, branch_of=name
            )
        except BaseException as error:  # noqa: BLE001 - collected, then decided on together
            return error
        finally:
            connections.close_all()  # this pool thread's own connection

    results = _on_daemon_threads(branch, list(fns))
    for outcome in results.values():
        expected = isinstance(outcome, StepFailed | Suspend) or _is_signal(outcome)
        if isinstance(outcome, BaseException) and not expected:
            raise outcome  # misuse (a nested step, say) fails the execution as in step.run
    return results


def _on_daemon_threads(fn: Callable[[str], object], keys: list[str]) -> dict[str, object]:
    """`fn(key)` for every key, at most MAX_THREADS at once, on daemon threads as Huey's own
    are: a stopping worker exits at its shutdown timeout even with a branch still running
    (concurrent.futures would join its threads at exit, however long the branch takes)."""
    pending = iter(keys)
    lock = threading.Lock()
    results: dict[str, object] = {}

    def work() -> None:
        while True:
            with lock:
                key = next(pending, None)
            if key is None:
                return
            results[key] = fn(key)

    threads = [
        threading.Thread(target=work, name="ploy-parallel", daemon=True)
        for _ in range(min(len(keys), MAX_THREADS))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {key: results[key] for key in keys}


def _is_signal(outcome: object) -> TypeGuard[BaseException]:
    from engine.claims import Abandon, EngineUnavailable, Release

    return isinstance(outcome, Abandon | EngineUnavailable | Release)


def _finish_group(
    context: StepContext,
    group: Step,
    *,
    output: dict[str, object] | None = None,
    error: StepFailed | None = None,
) -> object:
    now: datetime = context._clock()
    with context._write():
        group.finished_at = now
        if error is None:
            group.status, group.output = StepStatus.COMPLETED, output
        else:
            group.status = StepStatus.FAILED
            group.error = {"type": "StepFailed", "message": str(error), "traceback": ""}
        group.save(update_fields=["status", "output", "error", "finished_at"])
    return output if error is None else _failed(group)


def _failed(group: Step) -> StepFailed:
    error = group.error or {}
    return StepFailed(group.name, error.get("type", "StepFailed"), error.get("message", ""), 1)
