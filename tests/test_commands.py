"""The management commands: trigger from the shell, and prune old executions."""

from __future__ import annotations

import contextlib
import os
import signal
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from engine import runtime
from engine.models import Attempt, Execution, Step

pytestmark = pytest.mark.django_db(transaction=True)


def call(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


def test_trigger_prints_the_new_execution_id():
    execution_id = call("trigger", "DATA_FLOW", '{"action": "double", "value": 21}')
    assert Execution.objects.get(id=execution_id).input == {"action": "double", "value": 21}
    again = call("trigger", "DATA_FLOW", "{}", "--idempotency-key", "k1")
    assert call("trigger", "DATA_FLOW", "{}", "--idempotency-key", "k1") == again


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("trigger", "DATA_FLOW", "{bad"), "the input is not JSON"),
        (("trigger", "GHOST", "{}"), "unknown workflow 'GHOST'"),
        (("prune", "--older-than", "-1"), "--older-than must be a number of days >= 0, got -1"),
    ],
)
def test_commands_refuse_bad_input_with_one_line(args, message):
    with pytest.raises(CommandError, match=message):
        call_command(*args)
    assert Execution.objects.count() == 0


def test_prune_deletes_only_old_ended_executions_with_their_steps():
    old_done, old_failed, recent, running = (
        runtime.trigger("FLAKY", {"failures": 0}).execution_id for _ in range(4)
    )
    for execution_id in (old_done, old_failed, recent):
        runtime.run_execution(execution_id)
    long_ago = timezone.now() - timedelta(days=40)
    Execution.objects.filter(id__in=[old_done, old_failed, running]).update(finished_at=long_ago)
    Execution.objects.filter(id=old_failed).update(status="failed")

    assert call("prune", "--older-than", "30", "--dry-run") == "2 execution(s) would be deleted"
    assert call("prune", "--older-than", "30", "--status", "failed").startswith("deleted 1 ")
    assert call("prune", "--older-than", "30").startswith("deleted 1 ")
    assert set(Execution.objects.values_list("id", flat=True).iterator()) == {
        Execution.objects.get(id=recent).id,
        Execution.objects.get(id=running).id,
    }
    assert Step.objects.filter(execution_id__in=[old_done, old_failed]).count() == 0
    assert Attempt.objects.filter(step__execution_id=old_done).count() == 0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def serve(tmp_path):
    """`manage.py serve` on a free port; yields (process, log path, worker pid)."""
    import re
    import subprocess
    import sys

    from tests.conftest import ROOT, wait_for, worker_environment

    log = tmp_path / "serve.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(free_port())],
            cwd=ROOT,
            env=worker_environment(PYTHONUNBUFFERED="1"),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    wait_for(lambda: "consumer started" in log.read_text(), timeout=60)
    worker_pid = int(re.search(r"worker pid (\d+)", log.read_text()).group(1))
    yield process, log, worker_pid
    for pid in (process.pid, worker_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):
        return "zombie" not in open(f"/proc/{pid}/status").read()
    return False


def test_serve_stops_its_worker_gracefully_on_sigterm(serve):
    from tests.conftest import wait_for

    process, log, worker_pid = serve
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not is_running(worker_pid)
    assert "Shutting down gracefully" in log.read_text()  # not Huey's immediate stop
    wait_for(lambda: "stopped" in log.read_text(), timeout=5)


def test_a_killed_serve_takes_its_worker_down_with_it(serve):
    from tests.conftest import wait_for

    process, log, worker_pid = serve
    process.kill()
    process.wait(timeout=10)
    wait_for(lambda: not is_running(worker_pid), timeout=30)
