"""`manage.py ploy_scale_bench`: every page and endpoint timed at N executions; work in bench/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

if TYPE_CHECKING:
    from bench.sides import Servers

DEFAULTS = {
    "executions": 1_000_000,
    "requests": 30,
    "backend": "sqlite",
    "output": "docs/benchmarks.md",
    "postgres_url": "postgres://postgres@127.0.0.1:5432/postgres",
}


class Command(BaseCommand):
    help = (
        "Bulk-load N executions into a fresh database (a SQLite file, or a PostgreSQL database "
        "created and dropped), time each dashboard, admin and API page (p50/p95), print the "
        "table and keep it in docs/benchmarks.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--executions", type=int, default=DEFAULTS["executions"], metavar="N")
        parser.add_argument("--requests", type=int, default=DEFAULTS["requests"], metavar="K")
        parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
        parser.add_argument(
            "--postgres-url",
            default=DEFAULTS["postgres_url"],
            help="an admin connection: the run creates its own database there and drops it",
        )
        parser.add_argument("--output", default=DEFAULTS["output"], help="the markdown page")
        parser.add_argument("--only", default="", help="a regular expression of page names")
        parser.add_argument("--no-write", action="store_true", help="print the table only")

    def handle(self, *args: object, **options: Any) -> None:
        from bench import scale_report, sides

        if options["executions"] < 1 or options["requests"] < 1:
            raise CommandError("--executions and --requests must be at least 1")
        servers = sides.Servers(postgres=options["postgres_url"], redis="")
        if options["backend"] == "postgres" and not servers.postgres_reachable():
            self.stdout.write(
                f"PostgreSQL skipped: {options['postgres_url']} is not reachable "
                "(start it, or pass --postgres-url)"
            )
            return
        figures = self.run_child(options, servers)
        self.stdout.write(scale_report.table(figures["timings"]))
        if options["no_write"]:
            return
        output = Path(options["output"])
        output = output if output.is_absolute() else sides.ROOT / output
        text = scale_report.section(
            backend=options["backend"],
            command=command_line(options),
            figures=figures,
            requests=options["requests"],
        )
        scale_report.write_section(output, options["backend"], text)
        self.stdout.write(f"wrote {output}")

    def run_child(self, options: dict[str, Any], servers: Servers) -> dict[str, Any]:
        """The load and the timings run in a child process whose settings name the fresh
        database, so nothing here (tests included) touches it, nor it anything here."""
        from bench import sides

        with sides.fresh_folder() as folder:
            env = {**os.environ, "PLOY_DATA_DIR": str(folder)}
            for name in ("DJANGO_DEBUG", "DATABASE_URL", "PLOY_QUEUE_URL", "PLOY_API_TOKEN"):
                env.pop(name, None)
            env["DJANGO_SETTINGS_MODULE"] = "ployweb.settings"
            env["DJANGO_ALLOWED_HOSTS"] = "localhost"
            result = folder / "figures.json"
            command = [sys.executable, "-m", "bench.scale_run", str(result)]
            command += [str(options["executions"]), str(options["requests"]), options["only"]]
            if options["backend"] == "postgres":
                with servers.database() as url:
                    env["DATABASE_URL"] = url
                    self.spawn(command, env)
            else:
                self.spawn(command, env)
            figures: dict[str, Any] = json.loads(result.read_text())
            return figures

    def spawn(self, command: list[str], env: dict[str, str]) -> None:
        from bench import sides

        child = subprocess.run(command, env=env, cwd=sides.ROOT, stderr=subprocess.PIPE, text=True)
        self.stderr.write(child.stderr)
        if child.returncode != 0:
            raise CommandError(f"the benchmark's child process failed (exit {child.returncode})")


def command_line(options: dict[str, Any]) -> str:
    """The command as run, with only the options that differ from their defaults."""
    words = ["python manage.py ploy_scale_bench", f"--executions {options['executions']}"]
    if options["backend"] != "sqlite":
        words.append(f"--backend {options['backend']}")
    for name in ("requests", "postgres_url", "output"):
        if options[name] != DEFAULTS[name] and not (
            name == "postgres_url" and options["backend"] == "sqlite"
        ):
            words.append(f"--{name.replace('_', '-')} {options[name]}")
    if options["only"]:
        words.append(f"--only '{options['only']}'")
    return " ".join(words)
