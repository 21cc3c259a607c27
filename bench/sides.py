"""The sides compared, and the fresh state (folder, database, queue) each run gets."""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
ALL_JOBS = frozenset({"steps", "sequential", "workers"})
MISSING_EXTRA = "DBOS skipped: the [bench] extra is not installed (pip install -e '.[bench]')"


@dataclass(frozen=True, kw_only=True)
class Fresh:
    """What one child run gets: environment variables and job parameters."""

    env: dict[str, str] = field(default_factory=dict)
    params: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Side:
    key: str
    label: str
    group: str  # what --only names: ployweb, dbos or huey
    module: str
    jobs: frozenset[str]
    fresh: Callable[[Path], contextlib.AbstractContextManager[Fresh]]


@dataclass(frozen=True, kw_only=True)
class Servers:
    postgres: str  # an admin URL; every run creates and drops its own database
    redis: str  # a Redis database number the benchmark may flush

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        import psycopg

        name = f"ploy_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.postgres, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunparse(urlparse(self.postgres)._replace(path=f"/{name}"))
        finally:
            with psycopg.connect(self.postgres, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def flushed_redis(self) -> str:
        import redis

        redis.Redis.from_url(self.redis).flushdb()
        return self.redis

    def postgres_reachable(self) -> bool:
        try:
            import psycopg

            psycopg.connect(self.postgres, connect_timeout=2).close()
        except Exception:  # any failure to connect means "not here"
            return False
        return True

    def redis_reachable(self) -> bool:
        try:
            import redis

            redis.Redis.from_url(self.redis, socket_connect_timeout=2).ping()
        except Exception:
            return False
        return True


def ployweb_side(backend: str, servers: Servers) -> Side:
    @contextlib.contextmanager
    def fresh(folder: Path) -> Iterator[Fresh]:
        env = {
            "DJANGO_SETTINGS_MODULE": "ployweb.settings",
            "PLOY_DATA_DIR": str(folder),
            "PLOY_CONFIG": str(ROOT / "bench" / "ploy.yaml"),
            "PLOY_LOG_LEVEL": "WARNING",
        }
        if backend == "sqlite":
            yield Fresh(env=env)
            return
        with servers.database() as url:
            yield Fresh(env={**env, "DATABASE_URL": url, "PLOY_QUEUE_URL": servers.flushed_redis()})

    label = "ployweb (SQLite)" if backend == "sqlite" else "ployweb (PostgreSQL + Redis)"
    return Side(
        key="ployweb",
        label=label,
        group="ployweb",
        module="bench.side_ployweb",
        jobs=ALL_JOBS,
        fresh=fresh,
    )


def dbos_sides(servers: Servers, *, postgres: bool) -> list[Side]:
    def sqlite(wal: bool) -> Callable[[Path], contextlib.AbstractContextManager[Fresh]]:
        @contextlib.contextmanager
        def fresh(folder: Path) -> Iterator[Fresh]:
            url = f"sqlite:///{folder / 'dbos.sqlite3'}"
            yield Fresh(params={"system_database_url": url, "wal": wal})

        return fresh

    @contextlib.contextmanager
    def on_postgres(folder: Path) -> Iterator[Fresh]:
        with servers.database() as url:
            yield Fresh(params={"system_database_url": url.replace("postgres://", "postgresql://")})

    common = {"group": "dbos", "module": "bench.side_dbos", "jobs": ALL_JOBS}
    sides = [
        Side(key="dbos-sqlite", label="DBOS SQLite (default)", fresh=sqlite(False), **common),
        Side(key="dbos-wal", label="DBOS SQLite (WAL + NORMAL)", fresh=sqlite(True), **common),
    ]
    if postgres:
        sides.append(
            Side(key="dbos-postgres", label="DBOS PostgreSQL", fresh=on_postgres, **common)
        )
    return sides


def huey_side(backend: str, servers: Servers) -> Side:
    @contextlib.contextmanager
    def fresh(folder: Path) -> Iterator[Fresh]:
        queue = str(folder / "huey.sqlite3") if backend == "sqlite" else servers.flushed_redis()
        yield Fresh(env={"BENCH_TMP_DIR": str(folder), "BENCH_HUEY_QUEUE": queue})

    label = "raw Huey (SQLite)" if backend == "sqlite" else "raw Huey (Redis)"
    return Side(
        key="huey",
        label=label,
        group="huey",
        module="bench.side_huey",
        jobs=frozenset({"workers"}),
        fresh=fresh,
    )


def dbos_installed() -> bool:
    return importlib.util.find_spec("dbos") is not None


def choose_sides(*, backend: str, only: set[str], servers: Servers) -> tuple[list[Side], list[str]]:
    """The sides to run and a note for each one left out."""
    sides, notes = [], []
    if "ployweb" in only:
        sides.append(ployweb_side(backend, servers))
    if "dbos" in only:
        if not dbos_installed():
            notes.append(
                "DBOS skipped: the [bench] extra is not installed (pip install -e '.[bench]')"
            )
        else:
            postgres = servers.postgres_reachable()
            sides += dbos_sides(servers, postgres=postgres)
            if not postgres:
                notes.append(f"DBOS on PostgreSQL skipped: {servers.postgres} is not reachable")
    if "huey" in only:
        sides.append(huey_side(backend, servers))
    return sides, notes


@contextlib.contextmanager
def fresh_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ploy-bench-") as folder:
        yield Path(folder)
