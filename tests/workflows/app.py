"""Workflows for the tests. Step bodies count their calls in files (`record`), so a test can
prove how often each body ran across processes, replays and restarts."""

import importlib.util
import os
import threading
import time
from pathlib import Path

from engine.errors import EventTimeout

_example = Path(__file__).resolve().parents[2] / "ploy.py"
_spec = importlib.util.spec_from_file_location("ploy_example", _example)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)


def _beside(module_name: str, file_name: str):
    """A fixture module next to this one, loaded by path as ploy.py is above."""
    spec = importlib.util.spec_from_file_location(
        module_name, Path(__file__).resolve().parent / file_name
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def counts_dir() -> Path:
    path = Path(os.environ["PLOY_DATA_DIR"]) / "counts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def record(execution_id: str, what: str) -> None:
    """Append one line per call; append is atomic for short lines, even across processes."""
    with open(counts_dir() / f"{execution_id}.log", "a") as handle:
        handle.write(what + "\n")


def calls(execution_id: str) -> list[str]:
    path = counts_dir() / f"{execution_id}.log"
    return path.read_text().splitlines() if path.exists() else []


def counted(execution_id, name, fn=lambda: None):
    def body():
        record(execution_id, name)
        return fn()

    return body


def data_processing(*, input, env, step, execution_id):
    def validate():
        record(execution_id, "validate")
        if not input.get("action"):
            raise ValueError("Missing action")
        return {"valid": True, "action": input["action"]}

    step.run("validate", validate)

    def process():
        record(execution_id, "process")
        if calls(execution_id).count("process") == 1:
            # A pause on the first call only: the kill test SIGKILLs the worker during it.
            time.sleep(input.get("pause", 0))
        return {"processedValue": input["value"] * 2}

    processed = step.run("process", process, input={"value": input["value"]})
    if input.get("sleep_ms"):
        step.sleep(input["sleep_ms"])

    def store():
        record(execution_id, "store")
        return (
            env.DB.prepare("INSERT INTO results (action, input, output) VALUES (?, ?, ?)")
            .bind(input["action"], input["value"], processed["processedValue"])
            .run()["meta"]
        )

    step.run("store", store)
    return {
        "action": input["action"],
        "originalValue": input["value"],
        "processedValue": processed["processedValue"],
    }


def flaky(*, input, step, execution_id):
    """Fails its first `failures` attempts; `retries` (optional) overrides the workflow's."""

    def body():
        record(execution_id, "flaky")
        if len(calls(execution_id)) <= input["failures"]:
            raise RuntimeError(f"failure number {len(calls(execution_id))}")
        return {"ok": True}

    options = {"retries": input["retries"]} if "retries" in input else {}
    return step.run("flaky", body, **options)


def failing(*, input, step, execution_id):
    step.run("fine", counted(execution_id, "fine", lambda: 1))
    step.run("boom", counted(execution_id, "boom", lambda: 1 / 0))


def on_failing_error(error, *, env, execution_id):
    record(execution_id, f"on_error:{type(error).__name__}")


def hook_raises(*, step):
    step.run("boom", lambda: 1 / 0)


def raising_hook(error, *, env):
    raise RuntimeError("the hook broke too")


def sleeper(*, input, step, execution_id):
    step.run("before", counted(execution_id, "before", lambda: "a"))
    step.sleep(input["ms"])
    step.run("after", counted(execution_id, "after", lambda: "b"))
    return "done"


def slow(*, input, step, execution_id):
    step.run("first", counted(execution_id, "first", lambda: 1))
    # Event.wait, not time.sleep: libfaketime (the clock-skew tests) breaks sleeps on absolute
    # monotonic deadlines.
    slow_body = counted(execution_id, "slow", lambda: threading.Event().wait(input["seconds"]))
    step.run("slow", slow_body)
    step.run("last", counted(execution_id, "last", lambda: 3))
    return "done"


def not_json(*, step, execution_id):
    return step.run("weird", counted(execution_id, "weird", lambda: object()))


def bad_return(*, step):
    step.run("fine", lambda: 1)
    return {1, 2, 3}


def self_cancel(*, step, execution_id):
    """Cancels itself in the middle of a step, as a user would from another process."""

    def first():
        from engine import runtime

        record(execution_id, "first")
        runtime.cancel_execution(execution_id)
        return 1

    step.run("first", first)
    step.run("second", counted(execution_id, "second"))


def swallow(*, step):
    try:
        step.sleep(50)
    except Exception:
        return "swallowed the sleep"
    return "slept"


workflows = {
    "data_processing": {"handler": data_processing, "on_error": example.report_failure},
    "flaky": {"handler": flaky},
    "failing": {"handler": failing, "on_error": on_failing_error},
    "hook_raises": {"handler": hook_raises, "on_error": raising_hook},
    "sleeper": sleeper,
    "slow": {"handler": slow},
    "not_json": {"handler": not_json},
    "bad_return": {"handler": bad_return},
    "swallow": {"handler": swallow},
    "self_cancel": {"handler": self_cancel},
}


def nested(*, step):
    step.run("outer", lambda: step.run("inner", lambda: 1))


async def fetch():
    return 1


def async_step(*, step):
    step.run("fetch", fetch)


workflows["nested"] = nested
workflows["async_step"] = async_step


def reused_name(*, step, execution_id):
    """A loop that reuses one step name: must fail at the second call, sending one email."""
    sent = []
    for person in ("alice", "bob", "carol"):
        sent.append(
            step.run("send_email", counted(execution_id, f"send:{person}", lambda p=person: p))
        )
    return sent


def finally_around_sleep(*, input, step, execution_id):
    """`release` guards the work after the sleep: it must run once, at the real end."""
    try:
        step.run("acquire", counted(execution_id, "acquire"))
        step.sleep(input["ms"])
        step.run("work", counted(execution_id, "work"))
    finally:
        step.run("release", counted(execution_id, "release"))
    return "done"


def bare_except_around_sleep(*, input, step, execution_id):
    """A bare except cannot turn a durable sleep into no sleep at all."""
    try:
        step.sleep(input["ms"])
    except:  # noqa: E722 - the point of this fixture
        record(execution_id, "swallowed")
    step.run("after", counted(execution_id, "after"))
    return "done"


def engine_write_fails(*, step, execution_id):
    """The step body makes the engine's own next write fail (a read-only database): the
    handler's `except Exception` must not see it, and nothing is marked failed."""

    def break_the_database():
        from django.db import connection

        record(execution_id, "break")
        if calls(execution_id).count("break") == 1:
            connection.cursor().execute("PRAGMA query_only = ON")
        return "ok"

    try:
        step.run("breaks", break_the_database)
    except Exception as error:
        record(execution_id, f"caught:{type(error).__name__}")
        return "swallowed"
    return "done"


workflows["reused_name"] = reused_name
workflows["finally_around_sleep"] = finally_around_sleep
workflows["bare_except_around_sleep"] = bare_except_around_sleep
workflows["engine_write_fails"] = engine_write_fails


# The fault-injection fixtures (tests/workflows/faults.py), loaded by path as ploy.py is above.
faults = _beside("ploy_fault_workflows", "faults.py")
workflows.update(faults.workflows)


def chain(*, input, step):
    """`steps` trivial steps, an optional sleep, then one last step: the hot path's shape."""
    total = sum(step.run(f"step-{n}", lambda n=n: n) for n in range(input["steps"]))
    if input.get("sleep_ms"):
        step.sleep(input["sleep_ms"])
    return step.run("last", lambda: total)


workflows["chain"] = chain


def approval(*, input, step, execution_id):
    """A human in the loop: wait for an approval (or time out), then act on it."""
    step.run("request", counted(execution_id, "request", lambda: {"sent": True}))
    try:
        decision = step.wait_for_event("approval", "approval", timeout_ms=input.get("timeout_ms"))
    except EventTimeout:
        step.run("escalate", counted(execution_id, "escalate", lambda: "escalated"))
        return "timed out"
    step.run("act", counted(execution_id, "act", lambda: decision))
    return decision


def two_events(*, step, execution_id):
    first = step.wait_for_event("first", "note")
    second = step.wait_for_event("second", "note")
    return [first, second]


def double(*, input, step, execution_id):
    """A child: doubles its input's value (fails on a negative one)."""

    def body():
        record(execution_id, "double")
        if input["value"] < 0:
            raise ValueError(f"negative value {input['value']}")
        return input["value"] * 2

    return step.run("double", body, retries=0)


def parent(*, input, step, execution_id):
    one = step.invoke("one", "DOUBLE", {"value": input["value"]})
    many = step.invoke_many("many", "DOUBLE", [{"value": v} for v in input["values"]])
    step.run("after", counted(execution_id, "after", lambda: None))
    return {"one": one, "many": many}


def parent_of_parents(*, input, step):
    return step.invoke("inner", "PARENT", input)


workflows["approval"] = approval
workflows["two_events"] = two_events
workflows["double"] = double
workflows["parent"] = parent
workflows["parent_of_parents"] = parent_of_parents


def sleep_until(*, input, step):
    step.sleep_until(input["until"])
    return "woke"


def invoke_ghost(*, step):
    return step.invoke("ghost", "GHOST", {})


workflows["sleep_until"] = sleep_until
workflows["invoke_ghost"] = invoke_ghost


def fan_out(*, input, step, execution_id):
    """Three branches; with `barrier` they must run at once (a barrier of three), and branch
    b fails its first `b_failures` calls."""
    barrier = threading.Barrier(3, timeout=10)

    def branch(key):
        def body():
            record(execution_id, key)
            if input.get("barrier") and calls(execution_id).count(key) == 1:
                barrier.wait()
            if key == "b" and calls(execution_id).count("b") <= input.get("b_failures", 0):
                raise RuntimeError("b fails")
            return key.upper()

        return body

    return step.parallel("fan", {key: branch(key) for key in "abc"})


workflows["fan_out"] = fan_out


def error_kinds(*, input, step, execution_id):
    from engine import NonRetryableError, RetryAfter

    def body():
        record(execution_id, "body")
        if input["kind"] == "final":
            raise NonRetryableError("the card was declined")
        if calls(execution_id).count("body") == 1:
            raise RetryAfter(10, "rate limited")
        return "ok"

    return step.run("charge", body)


workflows["error_kinds"] = error_kinds


# The real-worker fixtures of waiting and composition (tests/workflows/composition.py).
composition = _beside("ploy_composition_workflows", "composition.py")
workflows.update(composition.workflows)


def code_change(*, step, execution_id):
    """Its step names come from a file the test rewrites between runs, as a deploy would."""
    names = (counts_dir() / f"{execution_id}.names").read_text().split()
    for name in names[:2]:
        step.run(name, counted(execution_id, name))
    step.sleep(1000)
    for name in names[2:]:
        step.run(name, counted(execution_id, name))
    return names


workflows["code_change"] = code_change


def timed(*, input, step, execution_id):
    """A step slow on its first attempt only: the timeout gives up on it, the retry wins."""

    def body():
        record(execution_id, "body")
        if calls(execution_id).count("body") == 1:
            threading.Event().wait(input["first_seconds"])
            record(execution_id, "late")
            return "late"
        return "on time"

    return step.run("timed", body, timeout=input["timeout"])


workflows["timed"] = timed


def bounded_sleeper(*, input, step, execution_id):
    step.run("before", counted(execution_id, "before"))
    step.sleep(input["ms"])
    step.run("after", counted(execution_id, "after"))
    return "done"


workflows["bounded_sleeper"] = {"handler": bounded_sleeper, "on_error": on_failing_error}


# The fixtures of reruns from a step (tests/workflows/reruns.py).
reruns = _beside("ploy_rerun_workflows", "reruns.py")
workflows.update(reruns.workflows)
# The fixtures of logs per attempt (tests/workflows/logged.py).
logged = _beside("ploy_logged_workflows", "logged.py")
workflows.update(logged.workflows)
# The transaction-step fixtures (tests/workflows/transactions.py).
transactions = _beside("ploy_transaction_workflows", "transactions.py")
workflows.update(transactions.workflows)
# The concurrency-limit fixtures (tests/workflows/limits.py).
limits = _beside("ploy_limit_workflows", "limits.py")
workflows.update(limits.workflows)
