"""Workflows for the tests of logs per attempt (tests/test_attempt_logs.py): step bodies that
log, print and call step.log. Calls are counted in files, as app.py's `record` does, so the
count holds across processes."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger("app.payments")


def _counts(name: str) -> Path:
    path = Path(os.environ["PLOY_DATA_DIR"]) / "counts"
    path.mkdir(parents=True, exist_ok=True)
    return path / f"{name}.log"


def count_call(name: str) -> int:
    """Record one call of `name`; how many there have been, this one included."""
    with open(_counts(name), "a") as handle:
        handle.write("call\n")
    return len(_counts(name).read_text().splitlines())


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


def logged_retry(*, input, step, execution_id):
    """Attempt 1 logs, prints and fails; attempt 2 logs, prints and completes."""

    def charge():
        attempt = count_call(f"{execution_id}-charge")
        logger.info("attempt %s starts", attempt)
        print(f"printed by attempt {attempt}")
        logger.info("markup stays text: <script>alert(%s)</script>", attempt)
        print(f"to stderr from attempt {attempt}", file=sys.stderr)
        step.log(
            "charging",
            attempt=attempt,
            amount=input.get("amount"),
            when=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
            thing=Opaque(),
            ratio=float("nan"),
        )
        if attempt == 1:
            logger.warning("the card service answered %s", 503, extra={"service": "cards"})
            raise ValueError("the card service is down")
        try:
            raise KeyError("missing")
        except KeyError:
            logger.exception("recovered from a lookup")
        return {"attempt": attempt}

    result = step.run("charge", charge)
    step.run("quiet", lambda: "nothing logged")
    return result


def logged_pair(*, input, step, execution_id):
    """Two executions of this run at once (each waits until the other has started), each
    logging its own tag many times."""

    def talk():
        tag = input["tag"]
        (Path(os.environ["PLOY_DATA_DIR"]) / f"started-{input['run']}-{tag}").touch()
        deadline = time.monotonic() + 20
        other = Path(os.environ["PLOY_DATA_DIR"]) / f"started-{input['run']}-{input['other']}"
        while not other.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        for number in range(input["lines"]):
            logger.info("%s line %s", tag, number)
            print(f"{tag} print {number}")
            time.sleep(0.005)
        return tag

    return step.run("talk", talk)


def logged_flood(*, input, step):
    """Far more than an attempt keeps: the first and the last lines stay, the middle is cut."""

    def flood():
        print("the very first line")
        for number in range(input["lines"]):
            print(f"line {number:06d} " + "x" * 90)
        print("x" * input["long"])  # one line longer than the whole bound
        print("the very last line")
        return "flooded"

    return step.run("flood", flood)


def logged_threads(*, step):
    """Branches of step.parallel and a body run under timeout= log to their own attempts; a
    thread the body starts itself does not (it is another thread)."""

    def branch(key):
        def body():
            logger.info("branch %s", key)
            print(f"print from {key}")
            return key

        return body

    found = step.parallel("fan", {key: branch(key) for key in ("left", "right")})

    def bounded():
        logger.info("inside the timeout helper thread")
        step.log("step.log in the helper thread", helper=True)
        stray = threading.Thread(target=lambda: logger.info("from a thread of my own"))
        stray.start()
        stray.join()
        return "bounded"

    found["bounded"] = step.run("bounded", bounded, timeout=30)
    return found


def logged_timeout(*, step, execution_id):
    """Attempt 1 outlives its timeout, and logs again once it has: too late for its attempt."""

    def body():
        attempt = count_call(f"{execution_id}-slow")
        logger.info("attempt %s before", attempt)
        if attempt == 1:
            time.sleep(1.5)
            logger.info("attempt 1 after its timeout")
            (Path(os.environ["PLOY_DATA_DIR"]) / f"late-{execution_id}").touch()
        return attempt

    return step.run("slow", body, timeout=0.5)


def log_between_steps(*, step):
    step.run("first", lambda: 1)
    step.log("between steps")
    return step.run("second", lambda: 2)


def logged_chain(*, input, step):
    """`steps` trivial steps, each logging a line and printing one when `log` is true."""

    def body(number):
        def call():
            if input["log"]:
                logger.info("step %s", number)
                print(f"step {number}")
            return number

        return call

    return [step.run(f"s{number}", body(number)) for number in range(input["steps"])]


def logged_slowly(*, input, step):
    """`work` logs and prints, then waits (up to 30 s) for the test's go-ahead file before its
    last line: the first lines must reach the running attempt's row meanwhile."""
    go = Path(os.environ["PLOY_DATA_DIR"]) / f"go-{input['run']}"

    def work():
        logger.info("started %s", input["run"])
        print("half way")
        deadline = time.monotonic() + 30
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        logger.info("done")
        return "worked"

    return step.run("work", work)


workflows = {
    "logged_chain": logged_chain,
    "logged_slowly": logged_slowly,
    "logged_retry": logged_retry,
    "logged_pair": logged_pair,
    "logged_flood": logged_flood,
    "logged_threads": logged_threads,
    "logged_timeout": logged_timeout,
    "log_between_steps": log_between_steps,
}
