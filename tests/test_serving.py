"""The web servers: a reused (keep-alive) connection answers as fast as a fresh one, under
`manage.py serve` and under the README's production server (gunicorn)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.servers.basehttp import WSGIRequestHandler

from ployweb.local_server import NoDelayWSGIServer
from tests.conftest import ROOT, drop_postgres, migrated_postgres, wait_for, worker_environment

pytestmark = pytest.mark.django_db(transaction=True)

REQUESTS = 15
# Nagle's algorithm against delayed ACKs costs ~40 ms per reused request; a loaded 2-core
# machine adds a few ms of noise at most.
EXTRA_MS_ALLOWED = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_accepted_connection_has_nagle_off():
    server = NoDelayWSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    try:
        with socket.create_connection(server.server_address[:2]) as client:
            accepted, _address = server.get_request()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0, "client as is"
    finally:
        server.server_close()


def request_ms(connection: http.client.HTTPConnection, path: str) -> float:
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    assert response.status == 200, response.status
    return (time.perf_counter() - started) * 1000


def fresh_and_reused_ms(port: int, path: str = "/api/workflows") -> tuple[float, float]:
    """The median latency of a request on a new connection each time, and on one kept open."""
    fresh = []
    for _ in range(REQUESTS):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        fresh.append(request_ms(connection, path))
        connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    request_ms(connection, path)  # the connection's first request is a fresh one
    reused = [request_ms(connection, path) for _ in range(REQUESTS)]
    connection.close()
    return statistics.median(fresh), statistics.median(reused)


@contextlib.contextmanager
def server_process(command: list[str], port: int, log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "w") as output:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=worker_environment(PYTHONUNBUFFERED="1"),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: answers(port) or process.poll() is not None, timeout=60)
        assert process.poll() is None, log.read_text()
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/api/workflows")
        return connection.getresponse().status == 200
    except OSError:
        return False


def assert_no_keep_alive_penalty(port: int) -> None:
    fresh, reused = fresh_and_reused_ms(port)
    assert reused < fresh + EXTRA_MS_ALLOWED, f"fresh {fresh:.1f} ms, reused {reused:.1f} ms"


def test_serve_answers_a_reused_connection_without_delay(tmp_path):
    port = free_port()
    command = [sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(port)]
    with server_process(command, port, tmp_path / "serve.log"):
        assert_no_keep_alive_penalty(port)


@pytest.mark.parametrize("extra", [[], ["--worker-class", "gthread", "--threads", "4"]])
def test_the_production_server_answers_a_reused_connection_without_delay(tmp_path, extra):
    port = free_port()
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    command = [gunicorn, "ployweb.wsgi", "-b", f"127.0.0.1:{port}", *extra]
    with server_process(command, port, tmp_path / "gunicorn.log"):
        assert_no_keep_alive_penalty(port)


# --- database connections kept between requests -------------------------------------------------


@pytest.mark.parametrize("url", ["postgres://ploy@127.0.0.1:5432/ploy", "sqlite:////tmp/x.db"])
def test_the_web_process_keeps_its_database_connection_and_checks_it(url):
    from ployweb.settings import _database

    config = _database(url)
    assert config["CONN_MAX_AGE"] >= 60
    assert config["CONN_HEALTH_CHECKS"] is True


def test_postgresql_connections_run_without_jit(postgres_url):
    """PostgreSQL's JIT compiled the grouped read of /metrics for 0.27 s of a 0.3 s scrape."""
    import psycopg

    from ployweb.settings import _database

    config = _database(postgres_url)
    assert config["OPTIONS"]["options"] == "-c jit=off"
    with psycopg.connect(postgres_url, options=config["OPTIONS"]["options"]) as connection:
        assert connection.execute("SHOW jit").fetchone() == ("off",)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of its own."""
    from tests.test_scaleout import reachable

    if not reachable(5432):
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    url = migrated_postgres()
    yield url
    drop_postgres(url)


def backends(url: str) -> set[int]:
    """The server processes of the other connections to this database."""
    import psycopg

    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
    return {pid for (pid,) in rows}


def read_executions(connection: http.client.HTTPConnection) -> None:
    request_ms(connection, "/api/executions?limit=1")


@pytest.mark.parametrize("server", ["gunicorn", "serve"])
def test_requests_on_postgresql_reuse_one_connection(tmp_path, postgres_url, server, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    port = free_port()
    if server == "gunicorn":
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        command = [gunicorn, "ployweb.wsgi", "-b", f"127.0.0.1:{port}"]
    else:  # the web server of `manage.py serve`, without its worker
        code = (
            "from django.core.management import call_command; "
            "from ployweb.local_server import NoDelayRunserver; "
            f"call_command(NoDelayRunserver(), '127.0.0.1:{port}', use_reloader=False)"
        )
        command = [sys.executable, str(ROOT / "manage.py"), "shell", "-c", code]
    with server_process(command, port, tmp_path / "server.log"):
        seen: list[set[int]] = []
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(10):
            read_executions(connection)
            seen.append(backends(postgres_url))
        connection.close()
        # Kept after each request, and never more than one per thread (gunicorn.conf.py: 8).
        assert all(seen) and len(set().union(*seen)) <= (8 if server == "gunicorn" else 1), seen
        if server == "serve":
            # A thread per client connection: its database connection ends with it.
            wait_for(lambda: not backends(postgres_url), timeout=10)
