"""The sync of schedule rows with ploy.yaml in a rolling deploy: two versions' workers at once,
their ploy.yaml files differing. A row is deleted only by a ploy.yaml loaded no earlier than the
one that added it, only `migrate` and the leader sync, and the leader fires only the schedules
its own ploy.yaml defines. Real database; `now` and load times are passed in."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine import registry, schedules
from engine.config import PloyConfig, load_config
from engine.models import Execution, Schedule
from engine.registry import Registry
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SCHEDULES = Path(__file__).resolve().parent / "workflows_schedules" / "ploy.yaml"
NO_SCHEDULES = Path(__file__).resolve().parent / "workflows" / "ploy.yaml"
T = datetime(2026, 12, 1, 10, 0, 30, tzinfo=UTC)


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def version(tmp_path: Path, name: str, cron: str) -> PloyConfig:
    """One version's ploy.yaml: workflows A and B and these schedules."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "ploy.py").write_text("workflows = {}\n")
    (folder / "ploy.yaml").write_text(f"main: ploy.py\nworkflow:\n  A: a\n  B: b\ncron:\n{cron}")
    return load_config(folder / "ploy.yaml")


def names() -> set[str]:
    return set(Schedule.objects.values_list("name", flat=True))


def test_an_old_ploy_yaml_without_schedules_deletes_none_that_a_newer_one_added(tmp_path):
    old = version(tmp_path, "old", "  {}\n")  # loaded at T, before the deploy
    new = version(tmp_path, "new", '  HOURLY:\n    schedule: "0 * * * *"\n    workflow: A\n')
    schedules.sync(new, now=T + seconds(10))  # the new version's migrate
    schedules.pause("HOURLY")
    schedules.sync(old, now=T + seconds(20), loaded_at=T)  # an old worker leads meanwhile
    assert names() == {"HOURLY"}
    assert Schedule.objects.get(name="HOURLY").paused
    # A ploy.yaml loaded later without it (the schedule removed, or the deploy rolled back).
    schedules.sync(old, now=T + seconds(30), loaded_at=T + seconds(30))
    assert names() == set()


def test_a_schedule_the_new_version_dropped_goes_once_the_new_version_leads(tmp_path):
    old = version(tmp_path, "old", '  KEPT: "*/5 * * * *"\n  DROPPED: "0 3 * * *"\n')
    new = version(tmp_path, "new", '  KEPT: "*/5 * * * *"\n  ADDED: "0 4 * * *"\n')
    schedules.sync(old, now=T)
    schedules.sync(new, now=T + seconds(10))  # migrate
    assert names() == {"KEPT", "ADDED"}
    # An old worker that started before the deploy becomes leader: it adds its schedule back
    # (as of when its ploy.yaml was loaded) and leaves the new one alone.
    schedules.sync(old, now=T + seconds(20), loaded_at=T)
    assert names() == {"KEPT", "DROPPED", "ADDED"}
    assert Schedule.objects.get(name="DROPPED").created_at == T
    # The first leader of the new version deletes it again.
    schedules.sync(new, now=T + seconds(30), loaded_at=T + seconds(10))
    assert names() == {"KEPT", "ADDED"}


@pytest.fixture
def loaded() -> Iterator[Registry]:
    schedules._synced = None
    yield registry.load(SCHEDULES)
    registry.load()
    schedules._synced = None


def test_the_leader_fires_only_the_schedules_its_ploy_yaml_defines(loaded):
    schedules.sync(loaded.config, now=T)
    schedules._synced = loaded.config  # tick() must not sync again at the real time
    other = {"schedule": "every 1s", "cron": "", "every_seconds": 1.0, "workflow": "REPORT"}
    Schedule.objects.create(name="OTHER_VERSION", next_run_at=T, created_at=T, **other)
    started = schedules.tick(now=T + seconds(1.2))
    assert [execution.binding for execution in Execution.objects.all()] == ["REPORT"]
    assert len(started) == 1  # TICKER's tick
    assert Execution.objects.get().idempotency_key.startswith("schedule:TICKER:")
    row = Schedule.objects.get(name="OTHER_VERSION")
    assert (row.next_run_at, row.last_run_at) == (T, None)  # left to its own version's leader


def test_old_workers_in_a_rolling_deploy_keep_the_new_versions_schedules(start_worker):
    """Old workers (a ploy.yaml without schedules) run on while the new version's migrate adds
    schedules: one more old worker starts, the old leader goes, the next old one leads."""
    leader = start_worker(threads=1, PLOY_CONFIG=str(NO_SCHEDULES))
    next_leader = start_worker(threads=1, PLOY_CONFIG=str(NO_SCHEDULES))
    schedules.sync(load_config(SCHEDULES))  # the new version's migrate
    added = names()
    assert added == {"EVERY_MINUTE", "TICKER", "NIGHTLY_REPORT"}
    start_worker(threads=1, PLOY_CONFIG=str(NO_SCHEDULES))
    leader.kill()
    wait_for(lambda: "added by a newer ploy.yaml kept" in next_leader.log.read_text(), timeout=30)
    assert names() == added
    assert not Execution.objects.exists()  # nor did an old leader fire them
