"""`manage.py serve`: everything for local use in one command: migrate, a worker, the web app."""

from __future__ import annotations

import signal
import subprocess
import sys

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from dashboard import access


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
        worker = subprocess.Popen(
            [sys.executable, sys.argv[0], "runhuey", "--workers", str(workers)]
        )
        self.stdout.write(f"ployweb: dashboard on http://{host}:{port}/ (worker pid {worker.pid})")
        self.stdout.write(f"ployweb: {access.describe()}")
        try:
            call_command("runserver", f"{host}:{port}", use_reloader=False)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
