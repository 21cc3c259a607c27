"""`manage.py ploy_bench`: ployweb against DBOS Transact and raw Huey; the work is in bench/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

GROUPS = ("ployweb", "dbos", "huey")
DEFAULTS = {
    "sizes": "default",
    "backend": "sqlite",
    "repeat": 3,
    "only": ",".join(GROUPS),
    "output": "docs/benchmarks.md",
    "postgres_url": "postgres://postgres@127.0.0.1:5432/postgres",
    "redis_url": "redis://127.0.0.1:6379/14",
}


class Command(BaseCommand):
    help = (
        "Benchmark ployweb against DBOS Transact and raw Huey (peers need the [bench] extra); "
        "print the table and write docs/benchmarks.md with its chart."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sizes", choices=("default", "small"), default=DEFAULTS["sizes"])
        parser.add_argument(
            "--backend",
            choices=("sqlite", "postgres"),
            default=DEFAULTS["backend"],
            help="ployweb on SQLite files, or on PostgreSQL + Redis (a fresh database per run)",
        )
        parser.add_argument("--repeat", type=int, default=DEFAULTS["repeat"], metavar="K")
        parser.add_argument(
            "--only", default=DEFAULTS["only"], help=f"comma-separated, of {', '.join(GROUPS)}"
        )
        parser.add_argument("--output", default=DEFAULTS["output"], help="the markdown page")
        parser.add_argument("--profile", metavar="DIR", help="pyinstrument reports of ployweb")
        parser.add_argument("--postgres-url", default=DEFAULTS["postgres_url"])
        parser.add_argument("--redis-url", default=DEFAULTS["redis_url"], help="flushed")

    def handle(self, *args: object, **options: Any) -> None:
        from bench import report, runner, sides

        only = {group.strip() for group in str(options["only"]).split(",") if group.strip()}
        if unknown := only - set(GROUPS):
            raise CommandError(f"--only: unknown {', '.join(sorted(unknown))}; use {GROUPS}")
        if options["repeat"] < 1:
            raise CommandError("--repeat must be at least 1")
        servers = sides.Servers(postgres=options["postgres_url"], redis=options["redis_url"])
        if options["backend"] == "postgres" and not (
            servers.postgres_reachable() and servers.redis_reachable()
        ):
            raise CommandError(f"--backend postgres needs {servers.postgres} and {servers.redis}")
        chosen, notes = sides.choose_sides(backend=options["backend"], only=only, servers=servers)
        sizes = runner.SIZES[options["sizes"]]
        profile = Path(options["profile"]).resolve() if options["profile"] else None
        if profile:
            profile.mkdir(parents=True, exist_ok=True)
        runs = runner.plan(chosen, sizes, options["repeat"])
        results = runner.run_all(runs, write=self.stderr.write, profile=profile)
        page = report.Report(
            command=command_line(options),
            sizes=sizes,
            repeat=options["repeat"],
            sides=chosen,
            results=results,
            notes=notes,
        )
        self.stdout.write(page.terminal())
        output = Path(options["output"])
        written = page.write(output if output.is_absolute() else sides.ROOT / output)
        self.stdout.write("wrote " + ", ".join(str(path) for path in written))


def command_line(options: dict[str, Any]) -> str:
    """The command as run, with only the options that differ from their defaults."""
    words = ["python manage.py ploy_bench"]
    for name, default in DEFAULTS.items():
        if name not in ("postgres_url", "redis_url") and str(options[name]) != str(default):
            words.append(f"--{name.replace('_', '-')} {options[name]}")
    return " ".join(words)
