"""Raw Huey's workload: a chain of three tasks, each enqueuing the next; no durable state.

The queue is `BENCH_HUEY_QUEUE`: a SQLite file (Huey's own defaults) or a Redis URL. A
consumer runs it with `huey_consumer bench.huey_chain.huey`.
"""

from __future__ import annotations

import os
import time

from huey import RedisHuey, SqliteHuey


def _huey() -> SqliteHuey | RedisHuey:
    queue = os.environ.get("BENCH_HUEY_QUEUE", "huey-bench.sqlite3")
    if queue.startswith("redis://"):
        return RedisHuey("ploy-bench", url=queue)
    return SqliteHuey("ploy-bench", filename=queue)


huey = _huey()


@huey.task()
def validate(key: str) -> None:
    # A sample's first step records when it started; bulk chains store nothing.
    if key.startswith("sample-"):
        huey.put(f"started:{key}", time.time())
    process(key)


@huey.task()
def process(key: str) -> None:
    store(key)


@huey.task()
def store(key: str) -> None:
    huey.put(f"done:{key}", 1)
