"""Huey tasks: thin calls into the runtime. A message only says "look at execution X now"."""

from __future__ import annotations

from huey.contrib.djhuey import db_task

from engine import runtime


@db_task(name="ploy.run_execution")
def run_execution_task(execution_id: str, *_older_arguments: object) -> None:
    # Messages queued by earlier versions carry a second argument; it means nothing now.
    runtime.run_execution(execution_id)
