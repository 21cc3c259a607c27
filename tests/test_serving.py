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
from tests.conftest import ROOT, wait_for, worker_environment

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
