"""Load on the trigger endpoint: N concurrent clients posting for a while, through a real server.

    python -m bench.trigger_load                      # gunicorn as the README runs it, SQLite
    python -m bench.trigger_load --server serve        # manage.py serve's web server
    python -m bench.trigger_load --database postgres   # a fresh PostgreSQL database on 127.0.0.1
    python -m bench.trigger_load --url http://127.0.0.1:4000   # a server already running

Each client is one asyncio connection sending raw HTTP/1.1, kept alive when the server allows
it (reconnecting when it answers `Connection: close`), so the client costs little of the CPU
the server needs. Prints requests/s and the latency percentiles, and, for a server it started,
the CPU time the server's processes spent per request: on a machine shared with other work,
requests/s says how busy the machine was, CPU per request what the server costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"action": "double", "value": 21}'
POSTGRES = "postgresql://postgres@127.0.0.1:5432"


@dataclass(frozen=True, kw_only=True)
class Figures:
    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def line(self, cpu_ms: float | None = None) -> str:
        cpu = f", server CPU {cpu_ms:.2f} ms/request" if cpu_ms is not None else ""
        return (
            f"{self.per_second:,.0f} req/s, p50 {self.percentile(0.5):.2f} ms, "
            f"p95 {self.percentile(0.95):.2f} ms, p99 {self.percentile(0.99):.2f} ms "
            f"({self.requests} requests in {self.seconds:.1f} s, {self.errors} errors){cpu}"
        )


def request_bytes(host: str, path: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server keeps the connection open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() != "close"


async def client(host: str, port: int, payload: bytes, until: float, latencies: list[float]) -> int:
    errors = 0
    reader = writer = None
    while time.perf_counter() < until:
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        started = time.perf_counter()
        writer.write(payload)
        status, keep = await read_response(reader)
        latencies.append((time.perf_counter() - started) * 1000)
        errors += status != 202
        if not keep:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()
    return errors


async def load(url: str, binding: str, clients: int, seconds: float) -> Figures:
    parts = urlparse(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payload = request_bytes(f"{host}:{port}", f"/api/workflows/{binding}/trigger")
    latencies: list[float] = []
    started = time.perf_counter()
    until = started + seconds
    errors = await asyncio.gather(
        *(client(host, port, payload, until, latencies) for _ in range(clients))
    )
    elapsed = time.perf_counter() - started
    return Figures(
        requests=len(latencies), seconds=elapsed, latencies_ms=latencies, errors=sum(errors)
    )


def server_command(server: str, port: int, extra: list[str]) -> list[str]:
    if server == "serve":
        code = (
            "from django.core.management import call_command; "
            "from ployweb.local_server import NoDelayRunserver; "
            f"call_command(NoDelayRunserver(), '127.0.0.1:{port}', use_reloader=False)"
        )
        return [sys.executable, str(ROOT / "manage.py"), "shell", "-c", code]
    # The README's production command; gunicorn reads gunicorn.conf.py from the project root.
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    return [gunicorn, "ployweb.wsgi", "-b", f"127.0.0.1:{port}", *extra]


@contextlib.contextmanager
def fresh_database(kind: str, folder: Path) -> Iterator[dict[str, str]]:
    if kind == "sqlite":
        yield {"PLOY_DATA_DIR": str(folder)}
        return
    import psycopg

    name = f"ployweb_load_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {"PLOY_DATA_DIR": str(folder), "DATABASE_URL": f"{POSTGRES}/{name}"}
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cpu_seconds(group: int) -> float:
    """User + system CPU time of every live process in the process group (Linux /proc)."""
    total = 0
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:  # pgrp
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


@contextlib.contextmanager
def started_server(server: str, database: str, extra: list[str]) -> Iterator[tuple[str, int]]:
    """A fresh data folder and database, migrated, and the server on a free port."""
    folder = Path(tempfile.mkdtemp(prefix="ploy-load-"))
    try:
        with fresh_database(database, folder) as database_env:
            env = {**os.environ, "PLOY_CONFIG": str(ROOT / "bench" / "ploy.yaml"), **database_env}
            env.pop("DJANGO_SETTINGS_MODULE", None)
            manage = [sys.executable, str(ROOT / "manage.py"), "migrate", "--verbosity", "0"]
            subprocess.run(manage, env=env, cwd=ROOT, check=True)
            port = free_port()
            log = open(folder / "server.log", "w")  # noqa: SIM115 - closed below
            process = subprocess.Popen(
                server_command(server, port, extra),
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                wait_until_listening(port, process, folder / "server.log")
                yield f"http://127.0.0.1:{port}", process.pid
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
                log.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_listening(
    port: int, process: subprocess.Popen, log: Path, timeout: float = 60
) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise SystemExit(f"the server did not listen on port {port} within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running server; else one is started on fresh state")
    parser.add_argument("--server", choices=("gunicorn", "serve"), default="gunicorn")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--binding", default="DATA_FLOW")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gunicorn", default="", help="options for gunicorn, e.g. '-w 2'")
    options = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url, group = options.url, None
        if not url:
            url, group = stack.enter_context(
                started_server(options.server, options.database, options.gunicorn.split())
            )
        asyncio.run(load(url, options.binding, options.clients, 1))  # warm up
        runs = []
        for _ in range(options.repeat):
            before = cpu_seconds(group) if group else None
            run = asyncio.run(load(url, options.binding, options.clients, options.seconds))
            after = cpu_seconds(group) if group else None
            cpu_ms = (after - before) * 1000 / run.requests if before is not None else None
            runs.append((run, cpu_ms))
    for run, cpu_ms in runs:
        print(run.line(cpu_ms))
    rates = [run.per_second for run, _cpu in runs]
    print(f"median {statistics.median(rates):,.0f} req/s over {len(runs)} runs")


if __name__ == "__main__":
    main()
