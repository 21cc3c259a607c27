"""Huey tasks: thin calls into the runtime. A message only says "look at execution X now"."""

from __future__ import annotations

from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task

from engine import runtime


@db_task(name="ploy.run_execution")
def run_execution_task(execution_id: str, watched_owner: str | None = None) -> None:
    runtime.run_execution(execution_id, watched_owner=watched_owner)


@db_periodic_task(crontab(minute="*"), name="ploy.sweep")
def sweep_task() -> None:
    runtime.sweep()
