"""The scale benchmark's child process: on the fresh database its environment names, migrate,
bulk-load, time every page, and write the figures as JSON (`python -m bench.scale_run OUT N
REQUESTS ONLY`)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path


def main(output: Path, executions: int, requests: int, only: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ployweb.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from bench.scale_data import Loader
    from bench.scale_pages import time_pages

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    began = time.perf_counter()
    call_command("migrate", verbosity=0)
    say(f"migrated in {time.perf_counter() - began:.1f} s; loading {executions:,} executions")
    loaded = Loader().load(executions, now=datetime.now(UTC), say=say)
    say(
        f"loaded {loaded.executions:,} executions, {loaded.steps:,} steps and "
        f"{loaded.attempts:,} attempts in {loaded.seconds:.1f} s; timing {requests} requests each"
    )
    timings = time_pages(loaded, requests=requests, only=only, say=say)
    connection.close()
    output.write_text(
        json.dumps(
            {
                "loaded": dataclasses.asdict(loaded),
                "timings": [timing.as_dict() for timing in timings],
                "database": database_version(),
            }
        )
    )


def database_version() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            return f"PostgreSQL {cursor.fetchone()[0].split()[0]}"
        cursor.execute("SELECT sqlite_version()")
        return f"SQLite {cursor.fetchone()[0]}"


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
