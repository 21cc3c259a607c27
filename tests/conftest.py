"""Shared fixtures: real worker processes on the test database file, and waiting helpers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
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


POSTGRES = "postgres://postgres@127.0.0.1:5432"
_postgres_template: list[str] = []  # this process's migrated template, made on first use


def migrated_postgres(prefix: str = "ployweb_test") -> str:
    """The URL of a new PostgreSQL database with every migration applied, for one test: a copy
    of a template this process migrates once with `manage.py migrate`, since migrating takes
    seconds and a copy a fraction of one. `drop_postgres(url)` removes it."""
    import psycopg

    if not _postgres_template:
        template = f"ployweb_template_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{template}"')
        _postgres_template.append(template)
        migrate = [sys.executable, str(ROOT / "manage.py"), "migrate", "--verbosity", "0"]
        environment = worker_environment(DATABASE_URL=f"{POSTGRES}/{template}")
        done = subprocess.run(migrate, env=environment, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        for _ in range(100):  # the migrating process's session may still be closing
            try:
                admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_postgres_template[0]}"')
                break
            except psycopg.errors.ObjectInUse:
                time.sleep(0.1)
        else:
            raise AssertionError(f"the template {_postgres_template[0]} stayed in use")
    return f"{POSTGRES}/{name}"


def drop_postgres(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Parallel runs (`bin/test`: pytest-xdist with --dist loadgroup). The tests of one group run one
# after another on one worker: modules whose module-scoped fixtures are dear to make again (a
# server per back end, a mypy cache, a chromium), and the fault tests whose kills, freezes and
# recovery deadlines should not compete with each other for the two cores.
XDIST_GROUPS = {
    "test_bad_input.py": "bad_input",
    "test_types.py": "types",
    "test_browser.py": "browser",
    "test_browser_paging.py": "browser",
    "test_browser_reruns.py": "browser",
    "test_schedules_browser.py": "browser",
    "test_faults_scaleout.py": "faults_postgres",
    "test_faults.py": "faults_sqlite",
    "test_transaction_faults.py": "faults_sqlite",
}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks the groups; the order stays the collection's (some modules read notes that earlier
    tests of the same process left in its data folder)."""
    for item in items:
        # schemathesis names each API operation's test after the function alone on pytest 9.2:
        # its operation goes back into the id, or xdist (which keys its work by id) would run
        # one operation of each such test instead of all of them.
        if item.name.endswith("]") and not item.nodeid.endswith("]"):
            item._id = item.parent.id.child(item.name)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for item in items:
        group = XDIST_GROUPS.get(item.path.name)
        if group and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _postgres_template:
        drop_postgres(f"{POSTGRES}/{_postgres_template.pop()}")


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
