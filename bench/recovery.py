"""Recovery after kill -9, measured from outside: from the kill of the worker running a step
to the next attempt of that step starting on another worker, with the default timeout.

    PLOY_CONFIG=tests/workflows/ploy.yaml python bench/recovery.py 5
    (add DATABASE_URL=postgres://... PLOY_QUEUE_URL=redis://... for PostgreSQL + Redis;
    run `manage.py migrate` on that database first)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ployweb.settings")
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

from engine import runtime  # noqa: E402
from engine.models import Attempt, Step  # noqa: E402

LOGS = Path(tempfile.mkdtemp(prefix="ploy-recovery-"))


def worker(log: str) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "manage.py"), "runhuey", "--workers", "2"]
    with open(LOGS / log, "w") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)


def wait_until(condition) -> None:
    while not condition():
        time.sleep(0.02)


def measure_once(n: int) -> float:
    first = worker(f"{n}-first.log")
    time.sleep(2.5)
    execution_id = runtime.trigger("SLOW", {"seconds": 60}).execution_id
    wait_until(lambda: Step.objects.filter(execution_id=execution_id, name="slow").exists())
    second = worker(f"{n}-second.log")  # the live worker that takes over
    time.sleep(2.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = time.monotonic()
    retried = Attempt.objects.filter(step__execution_id=execution_id, step__name="slow", number=2)
    wait_until(retried.exists)
    recovery = time.monotonic() - killed
    runtime.cancel_execution(execution_id)
    second.send_signal(signal.SIGKILL)
    second.wait()
    return recovery


if __name__ == "__main__":
    figures = [measure_once(n) for n in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5)]
    shown = " ".join(f"{figure:.1f}" for figure in figures)
    print(f"recovery after kill -9 (s): {shown}; max {max(figures):.1f}")
