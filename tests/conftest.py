"""Shared fixtures: real worker processes on the test database file, and waiting helpers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connections

ROOT = Path(__file__).resolve().parent.parent


def redis_url() -> str:
    """This test process's own database on the Redis at 127.0.0.1:6379, for the queue of every
    module that uses it: a process runs one test at a time, and each parallel (xdist) worker has
    a database of its own, so no test flushes or reads another's messages. Worker gwN gets db
    N + 1 (up to 12), a run without xdist db 15; db 14 is `manage.py ploy_bench`'s."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker:
        return "redis://127.0.0.1:6379/15"
    number = int(worker.removeprefix("gw")) + 1
    if number > 12:
        raise RuntimeError("at most 12 parallel test workers can use Redis: run with -n 12")
    return f"redis://127.0.0.1:6379/{number}"


def wait_for(condition: Callable[[], object], timeout: float = 30, interval: float = 0.05):
    """Poll `condition` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s: {condition}")


def worker_environment(**extra: str) -> dict[str, str]:
    """The environment of a subprocess that must share this test's database and queue."""
    database = connections["default"].settings_dict
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "ployweb.settings", **extra}
    if database["ENGINE"] == "django.db.backends.sqlite3":
        environment.setdefault("DATABASE_URL", f"sqlite:///{database['NAME']}")
    return environment


class Worker:
    """A real `manage.py runhuey` process; `ready=False` returns before its consumer started."""

    def __init__(
        self, threads: int, log: Path, *, ready: bool = True, group: bool = False, **extra: str
    ) -> None:
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 - closed in stop()
        self._frozen = False
        self._group = group  # in a process group of its own, killed with the whole group
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runhuey", "--workers", str(threads)],
            cwd=ROOT,
            env=worker_environment(**extra),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=group,
        )
        if ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(lambda: self.is_ready or self.process.poll() is not None, timeout=timeout)
        assert self.process.poll() is None, f"worker exited at start:\n{self.log.read_text()}"

    @property
    def is_ready(self) -> bool:
        return "consumer started" in self.log.read_text()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def worker_ids(self) -> list[str]:
        """The ids of its `Worker` rows as it logged them: one, and one more each time it was
        declared dead while alive and registered again."""
        return re.findall(r"worker (\S+) started with", self.log.read_text())

    @property
    def worker_id(self) -> str:
        ids = self.worker_ids
        assert ids, f"worker {self.pid} has not registered yet"
        return ids[-1]

    def kill(self) -> None:
        """SIGKILL: the worker gets no chance to clean up, as in a crash."""
        if self._group:
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM, without waiting: a graceful stop (a second one stops it at once)."""
        self.process.send_signal(signal.SIGTERM)

    def freeze(self) -> None:
        """SIGSTOP: the process stays, silent, as a VM pause or a long GC stall would leave it."""
        self._frozen = True
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self._frozen = False

    def stop(self) -> None:
        if self._frozen and self.process.poll() is None:
            self.thaw()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start workers with `start_worker(threads=2, **environment)`; every one is stopped in
    teardown."""
    workers: list[Worker] = []

    def start(threads: int = 2, *, ready: bool = True, **extra: str) -> Worker:
        worker = Worker(threads, tmp_path / f"worker-{len(workers)}.log", ready=ready, **extra)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture(autouse=True)
def _empty_queue() -> Iterator[None]:
    """Each test starts with an empty queue: messages of earlier tests must not leak in."""
    from huey.contrib.djhuey import HUEY

    HUEY.flush()
    yield
