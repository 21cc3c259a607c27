"""The tables and triggers that keep the executions' counts (engine.counts) exact.

Triggers on engine_execution add each row to its created-minute bucket and to the all-time
totals on every INSERT, every UPDATE of its workflow, status or created_at, and every DELETE,
so every code path is counted: the ORM, raw SQL, bulk updates, the admin's deletes.

PostgreSQL: each connection adds into a shard of its own (1 + its pid mod SHARDS), summed on
read, so concurrent commits do not queue on one hot row. The triggers are deferred to the
commit and take their shard's advisory lock before any count row: a transaction never holds a
count row while it waits for an execution's row, and two never take count rows in opposite
orders, so counting adds no deadlock. SQLite has one writer at a time: shard 0, at once.

Django on SQLite rebuilds a table for some ALTERs and drops its triggers: after every migrate,
`repair_after_migrate` installs whatever is missing and, if anything was, counts again.
"""

from __future__ import annotations

import logging
from typing import Any

from django.apps import apps as global_apps
from django.apps.registry import Apps
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from engine.models import Execution, ExecutionCount, ExecutionTotal

logger = logging.getLogger(__name__)

EXECUTIONS = Execution._meta.db_table
COUNTS = ExecutionCount._meta.db_table
TOTALS = ExecutionTotal._meta.db_table
SHARDS = 16
# pg_advisory_xact_lock(LOCK_SPACE, shard): shards 1-SHARDS are the triggers', 0 the prune's.
LOCK_SPACE = 0x706C6F79
# Buckets are rebuilt (and kept) this far back: the longest window a reader asks for, and more.
REBUILT_HOURS = 25
TRIGGERS = ("engine_execution_counted", "engine_execution_recounted", "engine_execution_uncounted")
TRUNCATED = "engine_execution_counts_truncated"  # PostgreSQL: TRUNCATE (a flush) empties them


def bucket_sql(column: str, vendor: str) -> str:
    """Minutes since the Unix epoch of a timestamp column, as the database computes it."""
    if vendor == "postgresql":
        return f"floor(extract(epoch FROM {column}) / 60)::bigint"
    # Django stores UTC as text, 'YYYY-MM-DD HH:MM:SS.ffffff'. The fraction is cut off first:
    # SQLite rounds it to milliseconds, which moves 59.9996 s into the next minute. An
    # unreadable value counts in bucket 0 rather than fail the write.
    return f"COALESCE(CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) / 60, 0)"


def _sqlite_add(row: str, sign: str) -> str:
    bucket = bucket_sql(f"{row}.created_at", "sqlite")
    return (
        f"INSERT INTO {COUNTS} (bucket, workflow, status, shard, executions) "
        f"VALUES ({bucket}, {row}.workflow, {row}.status, 0, {sign}1) "
        "ON CONFLICT (bucket, workflow, status, shard) "
        "DO UPDATE SET executions = executions + excluded.executions; "
        f"INSERT INTO {TOTALS} (workflow, status, shard, executions) "
        f"VALUES ({row}.workflow, {row}.status, 0, {sign}1) "
        "ON CONFLICT (workflow, status, shard) "
        "DO UPDATE SET executions = executions + excluded.executions;"
    )


CHANGED = (
    "OLD.workflow IS NOT NEW.workflow OR OLD.status IS NOT NEW.status "
    "OR OLD.created_at IS NOT NEW.created_at"
)
COUNTED_COLUMNS = "workflow, status, created_at"

SQLITE_TABLES = (
    f"CREATE TABLE IF NOT EXISTS {COUNTS} (bucket INTEGER NOT NULL, workflow TEXT NOT NULL, "
    "status TEXT NOT NULL, shard INTEGER NOT NULL, executions INTEGER NOT NULL, "
    "PRIMARY KEY (bucket, workflow, status, shard)) WITHOUT ROWID",
    f"CREATE TABLE IF NOT EXISTS {TOTALS} (workflow TEXT NOT NULL, status TEXT NOT NULL, "
    "shard INTEGER NOT NULL, executions INTEGER NOT NULL, "
    "PRIMARY KEY (workflow, status, shard)) WITHOUT ROWID",
)
SQLITE_TRIGGERS = {
    TRIGGERS[0]: f"CREATE TRIGGER IF NOT EXISTS {TRIGGERS[0]} AFTER INSERT ON {EXECUTIONS} "
    f"BEGIN {_sqlite_add('NEW', '+')} END",
    TRIGGERS[1]: f"CREATE TRIGGER IF NOT EXISTS {TRIGGERS[1]} "
    f"AFTER UPDATE OF {COUNTED_COLUMNS} ON {EXECUTIONS} WHEN {CHANGED} "
    f"BEGIN {_sqlite_add('OLD', '-')} {_sqlite_add('NEW', '+')} END",
    TRIGGERS[2]: f"CREATE TRIGGER IF NOT EXISTS {TRIGGERS[2]} AFTER DELETE ON {EXECUTIONS} "
    f"BEGIN {_sqlite_add('OLD', '-')} END",
}


def _postgres_add(row: str, delta: str) -> str:
    bucket = bucket_sql(f"{row}.created_at", "postgresql")
    return (
        f"INSERT INTO {TOTALS} AS total (workflow, status, shard, executions) "
        f"VALUES ({row}.workflow, {row}.status, own_shard, {delta}) "
        "ON CONFLICT (workflow, status, shard) "
        f"DO UPDATE SET executions = total.executions + {delta}; "
        f"INSERT INTO {COUNTS} AS minute (bucket, workflow, status, shard, executions) "
        f"VALUES ({bucket}, {row}.workflow, {row}.status, own_shard, {delta}) "
        "ON CONFLICT (bucket, workflow, status, shard) "
        f"DO UPDATE SET executions = minute.executions + {delta};"
    )


POSTGRES_TABLES = (
    f"CREATE TABLE IF NOT EXISTS {COUNTS} (bucket bigint NOT NULL, "
    "workflow varchar(200) NOT NULL, status varchar(16) NOT NULL, shard smallint NOT NULL, "
    "executions bigint NOT NULL, PRIMARY KEY (bucket, workflow, status, shard)) "
    "WITH (fillfactor = 70)",
    f"CREATE TABLE IF NOT EXISTS {TOTALS} (workflow varchar(200) NOT NULL, "
    "status varchar(16) NOT NULL, shard smallint NOT NULL, executions bigint NOT NULL, "
    "PRIMARY KEY (workflow, status, shard)) WITH (fillfactor = 50)",
)
# Replaced on every install, so an upgrade's new body applies without a new migration.
POSTGRES_FUNCTIONS = (
    f"CREATE OR REPLACE FUNCTION {TRIGGERS[0]}() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"DECLARE own_shard smallint := 1 + mod(pg_backend_pid(), {SHARDS}); "
    f"BEGIN PERFORM pg_advisory_xact_lock({LOCK_SPACE}, own_shard); "
    f"IF TG_OP <> 'INSERT' THEN {_postgres_add('OLD', '-1')} END IF; "
    f"IF TG_OP <> 'DELETE' THEN {_postgres_add('NEW', '1')} END IF; "
    "RETURN NULL; END $$",
    f"CREATE OR REPLACE FUNCTION {TRUNCATED}() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN DELETE FROM {COUNTS}; DELETE FROM {TOTALS}; RETURN NULL; END $$",
)
DEFERRED = "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
POSTGRES_TRIGGERS = {
    TRIGGERS[0]: f"CREATE CONSTRAINT TRIGGER {TRIGGERS[0]} AFTER INSERT ON {EXECUTIONS} "
    f"{DEFERRED} EXECUTE FUNCTION {TRIGGERS[0]}()",
    TRIGGERS[1]: f"CREATE CONSTRAINT TRIGGER {TRIGGERS[1]} "
    f"AFTER UPDATE OF {COUNTED_COLUMNS} ON {EXECUTIONS} {DEFERRED} "
    f"WHEN ({CHANGED.replace('IS NOT', 'IS DISTINCT FROM')}) EXECUTE FUNCTION {TRIGGERS[0]}()",
    TRIGGERS[2]: f"CREATE CONSTRAINT TRIGGER {TRIGGERS[2]} AFTER DELETE ON {EXECUTIONS} "
    f"{DEFERRED} EXECUTE FUNCTION {TRIGGERS[0]}()",
    TRUNCATED: f"CREATE TRIGGER {TRUNCATED} AFTER TRUNCATE ON {EXECUTIONS} "
    f"FOR EACH STATEMENT EXECUTE FUNCTION {TRUNCATED}()",
}


def missing(connection: BaseDatabaseWrapper) -> list[str]:
    """The count tables and triggers this database lacks (on SQLite, or has in another
    version than this one's), by name."""
    tables = set(connection.introspection.table_names())
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT tgname, '' FROM pg_trigger WHERE tgrelid = to_regclass(%s)", [EXECUTIONS]
            )
            expected = dict.fromkeys(POSTGRES_TRIGGERS, "")
        else:
            cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
                [EXECUTIONS],
            )
            # SQLite keeps a trigger's statement as written, less its IF NOT EXISTS.
            expected = {
                name: sql.replace(" IF NOT EXISTS", "") for name, sql in SQLITE_TRIGGERS.items()
            }
        present = dict(cursor.fetchall())
    return [name for name in (COUNTS, TOTALS) if name not in tables] + [
        name for name, sql in expected.items() if present.get(name) != sql
    ]


def install(connection: BaseDatabaseWrapper) -> list[str]:
    """Create what is missing (and replace the PostgreSQL functions); when anything was
    missing, count every execution again, since writes may have gone uncounted. Idempotent:
    what was missing, by name."""
    with transaction.atomic(using=connection.alias):
        absent = missing(connection)
        postgres = connection.vendor == "postgresql"
        statements: list[str] = [*(POSTGRES_TABLES if postgres else SQLITE_TABLES)]
        triggers = POSTGRES_TRIGGERS if postgres else SQLITE_TRIGGERS
        statements += [*POSTGRES_FUNCTIONS] if postgres else []
        for name, sql in triggers.items():
            if name in absent:
                statements += [f"DROP TRIGGER IF EXISTS {name}" + (f" ON {EXECUTIONS}" * postgres)]
                statements.append(sql)
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        if absent:
            rebuild(connection)
    return absent


def uninstall(connection: BaseDatabaseWrapper, *, tables: bool = True) -> None:
    """Drop the triggers (and the tables): a bulk load goes faster without them, then
    `install` counts it in one pass."""
    postgres = connection.vendor == "postgresql"
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        for name in POSTGRES_TRIGGERS if postgres else SQLITE_TRIGGERS:
            cursor.execute(
                f"DROP TRIGGER IF EXISTS {name}" + (f" ON {EXECUTIONS}" if postgres else "")
            )
        if postgres:
            cursor.execute(f"DROP FUNCTION IF EXISTS {TRIGGERS[0]}(), {TRUNCATED}()")
        for table in (COUNTS, TOTALS) if tables else ():
            cursor.execute(f"DROP TABLE IF EXISTS {table}")


def rebuild(connection: BaseDatabaseWrapper) -> None:
    """Count every execution again, from the rows: the totals, and the buckets of the last
    REBUILT_HOURS. On PostgreSQL the executions are locked against writes meanwhile."""
    vendor = connection.vendor
    since = (
        f"now() - interval '{REBUILT_HOURS} hours'"
        if vendor == "postgresql"
        else f"strftime('%Y-%m-%d %H:%M:%S', 'now', '-{REBUILT_HOURS} hours')"
    )
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute(f"LOCK TABLE {EXECUTIONS} IN SHARE MODE")
        cursor.execute(f"DELETE FROM {COUNTS}")
        cursor.execute(f"DELETE FROM {TOTALS}")
        cursor.execute(
            f"INSERT INTO {COUNTS} (bucket, workflow, status, shard, executions) "
            f"SELECT {bucket_sql('created_at', vendor)}, workflow, status, 0, COUNT(*) "
            f"FROM {EXECUTIONS} WHERE created_at >= {since} GROUP BY 1, 2, 3"
        )
        cursor.execute(
            f"INSERT INTO {TOTALS} (workflow, status, shard, executions) "
            f"SELECT workflow, status, 0, COUNT(*) FROM {EXECUTIONS} GROUP BY workflow, status"
        )


def install_in_migration(apps: Apps, schema_editor: Any) -> None:
    install(schema_editor.connection)


def uninstall_in_migration(apps: Apps, schema_editor: Any) -> None:
    uninstall(schema_editor.connection)


def repair_after_migrate(
    sender: object, *, using: str, apps: Apps | None = None, **kwargs: object
) -> None:
    """post_migrate (also sent by a flush, without `apps`): once the counts' migration is
    applied, put back what a table rebuild dropped (and count again); nothing otherwise."""
    try:
        (apps or global_apps).get_model("engine", "ExecutionCount")
    except LookupError:  # migrated to before the counts existed
        return
    absent = install(connections[using])
    if absent:
        logger.warning("counts: recreated %s and counted every execution again", ", ".join(absent))
