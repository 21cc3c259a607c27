"""`manage.py serve`: everything for local use in one command: migrate, a worker, the web app."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from dashboard import access
from ployweb.local_server import NoDelayRunserver

PR_SET_PDEATHSIG = 1


class Command(BaseCommand):
    help = "Apply migrations, start a worker process and serve dashboard, API and admin."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=4000)
        parser.add_argument("--workers", type=int, default=4, help="worker threads")

    def handle(self, *args: object, host: str, port: int, workers: int, **options: object) -> None:
        # SIGTERM ends the server like Ctrl-C does, so the worker below is always stopped too.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        call_command("migrate", interactive=False, verbosity=0)
        # Its own session: Ctrl-C in the terminal reaches only this process, which then stops
        # the worker gracefully, once (a second signal to the worker means "stop at once").
        worker = subprocess.Popen(
            [sys.executable, sys.argv[0], "runhuey", "--workers", str(workers)],
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )
        self.stdout.write(f"ployweb: dashboard on http://{host}:{port}/ (worker pid {worker.pid})")
        self.stdout.write(f"ployweb: {access.describe()}")
        try:
            call_command(NoDelayRunserver(), f"{host}:{port}", use_reloader=False)
        finally:
            self.stdout.write("ployweb: stopping the worker (Ctrl-C again to stop it at once)")
            _stop_worker(worker)


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """Graceful: its running step bodies finish; a second Ctrl-C or SIGTERM stops it at once."""
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=settings.PLOY_SHUTDOWN_SECONDS + 5)
    except (KeyboardInterrupt, SystemExit):
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=10)
    except subprocess.TimeoutExpired:
        worker.kill()


def _stop_with_parent() -> None:
    """Linux: the worker is sent SIGTERM if this process dies without stopping it (kill -9)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
