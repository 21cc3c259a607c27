"""Logs per attempt (engine/attempt_logs.py): what a step body logs, prints or passes to
step.log is kept with its attempt, bounded, shown on the execution page and in the API."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from engine import attempt_logs, get_ploy_context, live_logs, runtime
from engine.errors import StepMisuse
from engine.models import Attempt, Execution
from tests.conftest import wait_for
from tests.test_dashboard import (
    detail_url,
    early_in_a_refresh_window,
    htmx,
    make_execution,
    make_step,
)
from tests.test_hot_path import counting

pytestmark = pytest.mark.django_db(transaction=True)

NOTE_START = "... "


def attempts_of(execution_id: str, step: str) -> list[Attempt]:
    return list(Attempt.objects.filter(step__execution_id=execution_id, step__name=step))


def messages(attempt: Attempt) -> list[str]:
    return [line["message"] for line in attempt.logs or []]


def run_logged_retry() -> str:
    """LOGGED: attempt 1 of `charge` fails, attempt 2 (a second later) completes."""
    execution_id = runtime.trigger("LOGGED", {"amount": 5}).execution_id
    runtime.run_execution(execution_id)
    runtime.run_execution(execution_id, now=timezone.now() + timedelta(seconds=5))
    assert Execution.objects.get(id=execution_id).status == "completed"
    return execution_id


def test_each_attempt_keeps_its_own_logging_and_print_lines():
    execution_id = run_logged_retry()
    first, second = attempts_of(execution_id, "charge")
    assert first.status == "failed" and second.status == "completed"
    assert [(line["level"], line["logger"]) for line in first.logs] == [
        ("INFO", "app.payments"),
        ("PRINT", "stdout"),
        ("INFO", "app.payments"),
        ("PRINT", "stderr"),
        ("INFO", "step.log"),
        ("WARNING", "app.payments"),
    ]
    assert messages(first)[:2] == ["attempt 1 starts", "printed by attempt 1"]
    assert messages(first)[3:] == [
        "to stderr from attempt 1",
        "charging",
        "the card service answered 503",
    ]
    assert first.logs[-1]["data"] == {"service": "cards"}  # a record's extra= fields
    assert not any("attempt 2" in message for message in messages(first))
    assert messages(second)[:2] == ["attempt 2 starts", "printed by attempt 2"]
    assert not any("attempt 1" in message for message in messages(second))
    error = second.logs[-1]
    assert error["level"] == "ERROR" and error["message"].startswith("recovered from a lookup\n")
    assert "Traceback" in error["message"] and "KeyError: 'missing'" in error["message"]
    for line in first.logs + second.logs:
        assert line["at"].endswith("Z") and line["at"][:4] == str(timezone.now().year)


def test_an_attempt_that_logs_nothing_stores_nothing():
    execution_id = run_logged_retry()
    [quiet] = attempts_of(execution_id, "quiet")
    assert quiet.status == "completed" and quiet.logs is None


def test_step_log_keeps_its_data_and_stores_what_is_not_json_as_its_repr():
    execution_id = run_logged_retry()
    [line] = [line for line in attempts_of(execution_id, "charge")[1].logs if line["data"]]
    assert line["logger"] == "step.log" and line["level"] == "INFO"
    assert line["data"] == {
        "attempt": 2,
        "amount": 5,
        "when": "datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)",
        "thing": "<Opaque thing>",
        "ratio": "nan",
    }


def test_step_log_between_steps_fails_the_execution_saying_where_it_belongs():
    execution_id = runtime.trigger("LOG_BETWEEN_STEPS", None).execution_id
    runtime.run_execution(execution_id)
    execution = Execution.objects.get(id=execution_id)
    assert execution.status == "failed"
    assert execution.error["type"] == "StepMisuse"
    assert execution.error["message"].startswith("step.log() was called outside a step body")
    assert "inside the function given to step.run()" in execution.error["message"]


def test_step_log_outside_any_run_is_refused():
    with pytest.raises(StepMisuse, match="outside a step body"):
        attempt_logs.step_log("nowhere", {})


def test_captured_output_still_reaches_the_process_output(capsys, caplog):
    caplog.set_level(logging.INFO)
    run_logged_retry()
    printed = capsys.readouterr()
    assert "printed by attempt 1\n" in printed.out and "printed by attempt 2\n" in printed.out
    assert "to stderr from attempt 2\n" in printed.err
    assert "attempt 2 starts" in caplog.text  # the records go on to the usual handlers
    assert "charging" in caplog.text  # step.log lines too, on the logger engine.step_log


def test_run_in_the_calling_process_captures_and_passes_through(capsys):
    env = get_ploy_context().env
    execution = env.LOGGED_THREADS.run(None)
    assert execution.status == "completed"
    steps = {step.name: step for step in execution.steps}
    assert [line["message"] for line in steps["fan[left]"].attempts[0].logs] == [
        "branch left",
        "print from left",
    ]
    assert "print from left\n" in capsys.readouterr().out


def test_parallel_branches_and_the_timeout_thread_log_to_their_own_attempts():
    execution_id = runtime.trigger("LOGGED_THREADS", None).execution_id
    runtime.run_execution(execution_id)
    [left] = attempts_of(execution_id, "fan[left]")
    [right] = attempts_of(execution_id, "fan[right]")
    [bounded] = attempts_of(execution_id, "bounded")
    assert messages(left) == ["branch left", "print from left"]
    assert messages(right) == ["branch right", "print from right"]
    # the timeout= helper thread writes to its attempt; a thread the body starts does not
    assert messages(bounded) == [
        "inside the timeout helper thread",
        "step.log in the helper thread",
    ]
    assert bounded.logs[1]["data"] == {"helper": True}


def test_a_timed_out_attempt_keeps_its_lines_and_what_it_logs_later_goes_nowhere_else():
    execution_id = runtime.trigger("LOGGED_TIMEOUT", None).execution_id
    runtime.run_execution(execution_id)  # attempt 1 times out; its body goes on
    runtime.run_execution(execution_id, now=timezone.now() + timedelta(seconds=5))
    late = Path(os.environ["PLOY_DATA_DIR"]) / f"late-{execution_id}"
    wait_for(late.exists, timeout=30)  # attempt 1's body has logged after its timeout
    first, second = attempts_of(execution_id, "slow")
    assert (first.status, first.error_type, second.status) == ("failed", "StepTimeout", "completed")
    assert messages(first) == ["attempt 1 before"]
    assert messages(second) == ["attempt 2 before"]


def test_an_attempt_keeps_its_first_and_last_lines_within_64_kib_and_says_what_was_cut():
    execution_id = runtime.trigger("LOGGED_FLOOD", {"lines": 2000, "long": 100_000}).execution_id
    runtime.run_execution(execution_id)
    [attempt] = attempts_of(execution_id, "flood")
    lines = attempt.logs
    size = len(json.dumps(lines, ensure_ascii=False).encode())
    assert 48 * 1024 < size <= 64 * 1024 + 512  # the note's own line aside
    assert lines[0]["message"] == "the very first line"
    assert lines[-1]["message"] == "the very last line"
    [note] = [line for line in lines if line["level"] == "NOTE"]
    words = note["message"].split()
    assert words[0] == "..." and words[2:4] == ["bytes", "cut:"]
    # 2,000 lines of ~150 bytes and one of 100 KB went in; what is kept plus the cut is that
    assert int(words[1]) > 2000 * 100 + 100_000 - 64 * 1024
    numbers = [line["message"][5:11] for line in lines if line["message"].startswith("line ")]
    assert numbers == sorted(numbers) and "000000" in numbers and "001999" not in numbers[:1]
    assert lines.index(note) < len(lines) - 1  # the note sits between the head and the tail


def test_a_single_line_over_the_bound_is_cut_in_place():
    log = attempt_logs.AttemptLog(limit=2000)
    log.add("INFO", "app", "é" * 5000, {"big": "x" * 5000})
    [line] = log.end()
    assert line["message"].endswith(" bytes cut") and line["message"].startswith("é")
    assert line["data"] is None
    assert len(json.dumps(line, ensure_ascii=False).encode()) <= 500  # a quarter of the bound


def test_print_without_a_newline_is_kept_at_the_end_and_later_writes_are_dropped():
    log = attempt_logs.AttemptLog(limit=10_000)
    log.write("stdout", "partial ")
    log.write("stdout", "line\nand the rest")
    lines = log.end()
    assert [line["message"] for line in lines] == ["partial line", "and the rest"]
    log.add("INFO", "app", "too late")
    assert log.end() == lines


def test_another_thread_never_writes_to_this_threads_capture():
    log = attempt_logs.AttemptLog(limit=10_000)
    other = threading.Thread(target=lambda: logging.getLogger("app.other").warning("elsewhere"))
    with log:
        logging.getLogger("app.mine").warning("here")
        other.start()
        other.join()
    assert [line["message"] for line in log.end()] == ["here"]


def test_logging_costs_no_extra_statement_per_step():
    def statements(log: bool) -> dict[str, int]:
        execution_id = runtime.trigger("LOGGED_CHAIN", {"steps": 10, "log": log}).execution_id
        with counting() as counts:
            runtime.run_execution(execution_id)
        assert Execution.objects.get(id=execution_id).status == "completed"
        return counts

    quiet, logged = statements(False), statements(True)
    assert logged == quiet
    if connection.vendor == "sqlite":  # as tests/test_hot_path.py counts a chain there
        assert quiet["statements"] == 8 * 10 + 3
    [attempt] = attempts_of(Execution.objects.latest("id").id, "s3")
    assert messages(attempt) == ["step 3", "step 3"]


def test_the_api_returns_each_attempts_logs(client):
    execution_id = run_logged_retry()
    body = client.get(f"/api/executions/{execution_id}").json()
    charge, quiet = body["steps"]
    first, second = charge["attempts"]
    assert first["logs"][0] == {
        "at": first["logs"][0]["at"],
        "level": "INFO",
        "logger": "app.payments",
        "message": "attempt 1 starts",
        "data": None,
    }
    assert [line["message"] for line in second["logs"]][:2] == [
        "attempt 2 starts",
        "printed by attempt 2",
    ]
    assert quiet["attempts"][0]["logs"] == []
    schema = client.get("/api/openapi.json").json()["components"]["schemas"]
    assert "logs" in schema["AttemptOut"]["properties"]


def test_the_execution_page_shows_each_attempts_logs_folded_and_escaped(client):
    execution_id = run_logged_retry()
    html = client.get(f"/executions/{execution_id}/").content.decode()
    assert html.count('<details class="attempt-logs"') == 2  # charge's two attempts; quiet none
    assert 'class="attempt-logs" id="step-1-attempt-1-logs">' in html  # folded: no `open`
    assert "Logs of attempt 2" in html and "(6 lines)" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(" not in html
    assert '<span class="log-level">WARNING</span>' in html
    assert "&quot;service&quot;: &quot;cards&quot;" in html  # a line's data, as JSON


def test_two_steps_at_once_in_one_worker_keep_their_own_lines(start_worker):
    worker = start_worker(threads=2)
    env = get_ploy_context().env
    run = str(timezone.now().timestamp())
    ids = {
        tag: env.LOGGED_PAIR.trigger(
            {"tag": tag, "other": other, "run": run, "lines": 40}
        ).execution_id
        for tag, other in (("A", "B"), ("B", "A"))
    }
    for execution_id in ids.values():
        wait_for(lambda id=execution_id: Execution.objects.get(id=id).is_finished, timeout=60)
    attempts = {tag: attempts_of(execution_id, "talk")[0] for tag, execution_id in ids.items()}
    a, b = attempts["A"], attempts["B"]
    assert a.status == b.status == "completed"
    assert a.worker == b.worker  # the same process, two of its threads, at the same time
    assert a.started_at < b.finished_at and b.started_at < a.finished_at
    for tag, attempt in attempts.items():
        assert len(attempt.logs) == 80
        assert all(line["message"].startswith(f"{tag} ") for line in attempt.logs), attempt.logs
        assert messages(attempt)[:2] == [f"{tag} line 0", f"{tag} print 0"]
    worker.stop()  # its stdout, a file, is flushed at exit
    output = worker.log.read_text()  # the worker's own output still has every line
    assert "INFO app.payments: A line 39" in output and "B print 39\n" in output


def test_a_failed_attempt_and_its_retry_on_a_worker_each_keep_their_lines(start_worker):
    start_worker(threads=1)
    execution_id = get_ploy_context().env.LOGGED.trigger({"amount": 7}).execution_id
    wait_for(lambda: Execution.objects.get(id=execution_id).is_finished, timeout=60)
    first, second = attempts_of(execution_id, "charge")
    assert (first.status, second.status) == ("failed", "completed")
    assert messages(first)[0] == "attempt 1 starts" and messages(second)[0] == "attempt 2 starts"
    assert first.error_type == "ValueError"


def test_the_admin_shows_an_attempts_logs_folded(admin_client):
    execution_id = run_logged_retry()
    first, _ = attempts_of(execution_id, "charge")
    html = admin_client.get(f"/admin/engine/attempt/{first.pk}/change/").content.decode()
    assert "<details><summary>6 lines</summary>" in html
    assert "INFO app.payments: attempt 1 starts" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__


def test_step_log_never_raises_for_what_it_is_given():
    log = attempt_logs.AttemptLog(limit=10_000)
    with log:
        attempt_logs.step_log(Unprintable(), {"big": 10**5000, "odd": Unprintable(), 7: [1.5]})
    [line] = log.end()
    assert line["message"] == "<Unprintable: str() failed>"
    assert line["data"] == {
        "big": "<int of 16610 bits>",
        "odd": "<Unprintable: repr() failed>",
        "7": [1.5],
    }


def test_a_handler_that_prints_to_the_captured_stderr_is_not_captured_twice():
    attempt_logs.install()
    handler = logging.StreamHandler(sys.stderr)  # made after the proxy replaced sys.stderr
    logger = logging.getLogger("app.own_handler")
    logger.addHandler(handler)
    try:
        log = attempt_logs.AttemptLog(limit=10_000)
        with log:
            logger.warning("once")
            print("printed", file=sys.stderr)
    finally:
        logger.removeHandler(handler)
    assert [(line["level"], line["message"]) for line in log.end()] == [
        ("WARNING", "once"),
        ("PRINT", "printed"),
    ]


# --- lines of a running attempt (engine/live_logs.py) --------------------------------------


def test_a_running_attempts_lines_reach_its_row_the_api_and_the_page_while_it_runs(
    start_worker, client, settings
):
    start_worker(threads=1)
    run = str(timezone.now().timestamp())
    execution_id = get_ploy_context().env.LOGGED_SLOWLY.trigger({"run": run}).execution_id

    def running_with_lines() -> Attempt | None:
        found = attempts_of(execution_id, "work")
        return found[0] if found and found[0].status == "running" and found[0].logs else None

    attempt = wait_for(running_with_lines, timeout=20)
    assert messages(attempt) == [f"started {run}", "half way"]
    answer = client.get(f"/api/executions/{execution_id}").json()
    [work] = answer["steps"]
    assert work["status"] == "running"
    assert [line["message"] for line in work["attempts"][0]["logs"]] == messages(attempt)
    page = client.get(f"/executions/{execution_id}/").content.decode()
    assert "Logs of attempt 1" in page and f"started {run}" in page

    (Path(settings.PLOY_DATA_DIR) / f"go-{run}").touch()
    wait_for(lambda: Execution.objects.get(id=execution_id).is_finished, timeout=30)
    [attempt] = attempts_of(execution_id, "work")
    assert attempt.status == "completed"
    assert messages(attempt) == [f"started {run}", "half way", "done"]


def test_live_lines_are_written_when_new_and_never_over_an_ended_attempt(monkeypatch):
    monkeypatch.setattr(live_logs, "FLUSH_SECONDS", 3600)  # this test's flushes only
    execution = make_execution(status="running", finished=None)
    step = make_step(execution, "work", status="running", finished=None,
                     attempts=[("running", 10, None, "")])  # fmt: skip
    row = Attempt.objects.get(step=step)
    log = attempt_logs.AttemptLog(attempt=row.id)
    with log:
        logging.getLogger("app.live").warning("first")
        assert live_logs.flush(older_than=0) == 1
        assert messages(Attempt.objects.get(id=row.id)) == ["first"]
        assert live_logs.flush(older_than=0) == 0  # nothing new: no write
        Attempt.objects.filter(id=row.id).update(status="completed", logs=log.so_far()[1])
        logging.getLogger("app.live").warning("second, after the attempt's end was written")
        assert live_logs.flush(older_than=0) == 0
    assert messages(Attempt.objects.get(id=row.id)) == ["first"]
    assert live_logs.flush(older_than=0) == 0  # the body is over: no longer watched


def test_a_poll_of_the_page_notices_new_lines_of_a_running_attempt(client):
    execution = make_execution(status="running", finished=None)
    step = make_step(execution, "work", status="running", finished=None,
                     attempts=[("running", 10, None, "")])  # fmt: skip
    line = {"at": "2026-12-01T10:00:00.000Z", "level": "INFO", "logger": "app", "data": None}
    Attempt.objects.filter(step=step).update(logs=[{**line, "message": "first"}])
    early_in_a_refresh_window()
    poll_url = client.get(detail_url(execution)).context["poll_url"]
    assert htmx(client, poll_url, "live").status_code == 204

    later = {**line, "at": "2026-12-01T10:00:01.000Z", "message": "second"}
    Attempt.objects.filter(step=step).update(logs=[{**line, "message": "first"}, later])
    response = htmx(client, poll_url, "live")

    assert response.status_code == 200
    assert (
        "Logs of attempt 1" in response.content.decode() and "second" in response.content.decode()
    )
