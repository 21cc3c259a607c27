"""Schedule ticks on the real database: one execution per tick however often and by however many
leaders it is fired, only the latest of missed ticks, pause and resume, and the sync of rows with
ploy.yaml. `now` is passed in: nothing waits for a real tick."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine import registry, runtime, schedules
from engine.config import load_config
from engine.errors import ConfigError, ScheduleNotFound
from engine.models import Execution, ExecutionStatus, Schedule, Step
from engine.registry import Registry
from tests.workflows_schedules.schedule_app import recorded, ticks_file

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = Path(__file__).resolve().parent / "workflows_schedules" / "ploy.yaml"
T = datetime(2026, 12, 1, 10, 0, 30, tzinfo=UTC)


@pytest.fixture
def loaded() -> Iterator[Registry]:
    """The schedules' ploy.yaml as this process's registry, and the default one back after."""
    ticks_file().unlink(missing_ok=True)
    schedules._synced = None
    yield registry.load(CONFIG)
    registry.load()
    schedules._synced = None


def synced(loaded: Registry, now: datetime = T) -> dict[str, Schedule]:
    schedules.sync(loaded.config, now=now)
    schedules._synced = loaded.config  # tick() must not sync again at the real time
    return {row.name: row for row in Schedule.objects.all()}


def executions_of(binding: str) -> list[Execution]:
    return list(Execution.objects.filter(binding=binding).order_by("id"))


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def test_sync_adds_each_schedule_with_its_first_tick(loaded):
    rows = synced(loaded)
    assert set(rows) == {"EVERY_MINUTE", "TICKER", "NIGHTLY_REPORT"}
    assert rows["EVERY_MINUTE"].next_run_at == datetime(2026, 12, 1, 10, 1, tzinfo=UTC)
    assert rows["TICKER"].next_run_at == T + seconds(1)
    assert rows["NIGHTLY_REPORT"].next_run_at == datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
    assert (rows["EVERY_MINUTE"].workflow, rows["EVERY_MINUTE"].calls_scheduled) == (
        "scheduled",
        True,
    )
    assert (rows["TICKER"].schedule, rows["TICKER"].workflow) == ("every 1s", "REPORT")
    assert rows["TICKER"].input == {"action": "report", "value": 0}
    assert not any(row.paused for row in rows.values())


def write_config(tmp_path: Path, cron: str) -> Path:
    (tmp_path / "ploy.py").write_text("def scheduled(event, *, env):\n    pass\n\nworkflows = {}\n")
    (tmp_path / "ploy.yaml").write_text(f"main: ploy.py\nworkflow:\n  A: a\n  B: b\ncron:\n{cron}")
    return tmp_path / "ploy.yaml"


def test_sync_follows_changes_of_ploy_yaml(tmp_path):
    first = load_config(
        write_config(
            tmp_path,
            "  KEEP:\n    every: 10s\n    workflow: A\n    input: 1\n"
            "  CHANGE:\n    every: 10s\n    workflow: A\n"
            '  DROP: "0 * * * *"\n',
        )
    )
    schedules.sync(first, now=T)
    schedules.pause("KEEP")
    later = T + seconds(5)
    second = load_config(
        write_config(
            tmp_path,
            "  KEEP:\n    every: 10s\n    workflow: B\n    input: 2\n"
            "  CHANGE:\n    every: 1m\n    workflow: A\n"
            '  NEW: "*/5 * * * *"\n',
        )
    )
    schedules.sync(second, now=later)
    rows = {row.name: row for row in Schedule.objects.all()}
    assert set(rows) == {"KEEP", "CHANGE", "NEW"}  # DROP is gone
    # Same timing: the next tick stays; the new target and input apply; still paused.
    assert rows["KEEP"].next_run_at == T + seconds(10)
    assert (rows["KEEP"].workflow, rows["KEEP"].input, rows["KEEP"].paused) == ("B", 2, True)
    # A changed expression is due at its next tick from now.
    assert rows["CHANGE"].next_run_at == later + seconds(60)
    assert rows["CHANGE"].schedule == "every 1m"
    assert rows["NEW"].next_run_at == datetime(2026, 12, 1, 10, 5, tzinfo=UTC)
    schedules.sync(load_config(write_config(tmp_path, "  {}\n")), now=later)
    assert not Schedule.objects.exists()


def test_a_due_tick_starts_one_execution_and_moves_on(loaded):
    synced(loaded)
    now = T + seconds(1.2)
    started = schedules.tick(now=now)
    [execution] = executions_of("REPORT")
    assert started == [str(execution.id)]
    assert execution.input == {"action": "report", "value": 0}
    assert execution.idempotency_key == "schedule:TICKER:2026-12-01T10:00:31.000000Z"
    row = Schedule.objects.get(name="TICKER")
    assert row.next_run_at == T + seconds(2)
    assert row.last_run_at == T + seconds(1)
    assert row.last_execution_id == execution.id
    assert schedules.tick(now=now) == []  # the same moment again starts nothing
    assert len(executions_of("REPORT")) == 1


def test_two_leaders_firing_the_same_tick_start_one_execution(loaded):
    synced(loaded)
    now = T + seconds(1.5)
    # Both leaders read the row while it was due, then fire it, one after the other.
    first_view = Schedule.objects.get(name="TICKER")
    second_view = Schedule.objects.get(name="TICKER")
    assert schedules.fire(first_view, now) is not None
    assert schedules.fire(second_view, now) is None
    assert schedules.fire(second_view, now + seconds(0.4)) is None  # a later clock, same row
    assert len(executions_of("REPORT")) == 1
    # The next tick fires once more, once.
    assert len(schedules.tick(now=T + seconds(2.1))) == 1
    keys = [execution.idempotency_key for execution in executions_of("REPORT")]
    assert keys == [
        "schedule:TICKER:2026-12-01T10:00:31.000000Z",
        "schedule:TICKER:2026-12-01T10:00:32.000000Z",
    ]


def test_missed_ticks_are_not_replayed_except_the_latest(loaded):
    synced(loaded)
    now = T + seconds(10.5)  # ticks 31 s ... 40 s were missed
    schedules.tick(now=now)
    [ticker] = executions_of("REPORT")
    assert ticker.idempotency_key == "schedule:TICKER:2026-12-01T10:00:40.000000Z"
    assert Schedule.objects.get(name="TICKER").next_run_at == T + seconds(11)
    # The cron form likewise: 10:01 ... 10:05 missed, 10:05 runs, 10:06 is next.
    schedules.tick(now=datetime(2026, 12, 1, 10, 5, 10, tzinfo=UTC))
    [minute] = executions_of("EVERY_MINUTE")
    assert (
        minute.input["scheduledTime"] == datetime(2026, 12, 1, 10, 5, tzinfo=UTC).timestamp() * 1000
    )
    assert Schedule.objects.get(name="EVERY_MINUTE").next_run_at == datetime(
        2026, 12, 1, 10, 6, tzinfo=UTC
    )
    assert len(executions_of("REPORT")) == 2  # TICKER's own latest tick, once more


def test_a_tick_exactly_at_now_is_due():
    row = Schedule(
        name="X", cron="*/5 * * * *", next_run_at=datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    )
    at_tick = datetime(2026, 12, 1, 10, 10, tzinfo=UTC)
    assert schedules.latest_tick(row, at_tick) == at_tick
    assert schedules.latest_tick(row, at_tick - seconds(0.001)) == at_tick - seconds(300)
    every = Schedule(name="Y", cron="", every_seconds=0.25, next_run_at=T)
    assert schedules.latest_tick(every, T + seconds(1)) == T + seconds(1)
    assert schedules.latest_tick(every, T + seconds(0.99)) == T + seconds(0.75)


def test_a_paused_schedule_does_not_tick_and_resumes_at_its_next_tick(loaded):
    synced(loaded)
    paused = schedules.pause("TICKER")
    assert paused.paused
    assert schedules.tick(now=T + seconds(5)) == []
    assert executions_of("REPORT") == []
    resumed = schedules.resume("TICKER", now=T + seconds(5.2))
    assert not resumed.paused
    assert resumed.next_run_at == T + seconds(6.2)  # the ticks of the pause are skipped
    schedules.tick(now=T + seconds(6.3))
    [execution] = executions_of("REPORT")
    assert execution.idempotency_key == "schedule:TICKER:2026-12-01T10:00:36.200000Z"
    # Resuming a running schedule changes nothing.
    assert schedules.resume("TICKER", now=T + seconds(30)).next_run_at == T + seconds(7.2)
    with pytest.raises(ScheduleNotFound, match="no schedule named 'GHOST'"):
        schedules.pause("GHOST")
    with pytest.raises(ScheduleNotFound):
        schedules.resume("GHOST")


def test_ploy_form_calls_scheduled_with_the_ticks_event(loaded):
    synced(loaded)
    tick = datetime(2026, 12, 1, 10, 1, tzinfo=UTC)
    schedules.tick(now=tick + seconds(0.3))
    [execution] = executions_of("EVERY_MINUTE")
    assert execution.workflow == "scheduled"
    milliseconds = int(tick.timestamp()) * 1000
    expected = {"name": "EVERY_MINUTE", "cron": "* * * * *", "scheduledTime": milliseconds}
    assert execution.input == expected
    runtime.run_execution(str(execution.id))
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED
    assert recorded() == [expected]
    assert [step.name for step in Step.objects.filter(execution=execution)] == ["scheduled"]
    rerun = runtime.rerun_execution(execution.id).execution_id  # a tick can be run again
    runtime.run_execution(rerun)
    assert Execution.objects.get(id=rerun).status == ExecutionStatus.COMPLETED
    assert recorded() == [expected, expected]


@pytest.mark.parametrize(
    ("fails", "status", "attempts"), [("1", "running", 1), ("no-retry", "failed", 1)]
)
def test_a_failing_scheduled_is_retried_unless_it_said_no_retry(
    loaded, monkeypatch, fails, status, attempts
):
    monkeypatch.setenv("PLOY_TEST_SCHEDULED_FAILS", fails)
    synced(loaded)
    schedules.tick(now=datetime(2026, 12, 1, 10, 1, 0, 100000, tzinfo=UTC))
    [execution] = executions_of("EVERY_MINUTE")
    runtime.run_execution(str(execution.id))
    execution.refresh_from_db()
    step = Step.objects.get(execution=execution, name="scheduled")
    assert execution.status == status  # running: waiting for its retry
    assert step.attempts.count() == attempts
    error = step.attempts.get().error_type
    assert error == ("RuntimeError" if fails == "1" else "NonRetryableError")


def write_module(tmp_path: Path, module: str, cron: str = '  TICK: "* * * * *"\n') -> Path:
    (tmp_path / "ploy.py").write_text(module)
    (tmp_path / "ploy.yaml").write_text(f"main: ploy.py\ncron:\n{cron}")
    return tmp_path / "ploy.yaml"


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (
            "workflows = {}\n",
            "ploy.yaml: cron.TICK calls scheduled(event, *, env), which ploy.py does not define: "
            "add `def scheduled(event, *, env): ...` there, or give the schedule a workflow:",
        ),
        (
            "scheduled = 3\nworkflows = {}\n",
            "ploy.py: scheduled must be a function (for cron.TICK)",
        ),
        (
            "async def scheduled(event, *, env):\n    pass\nworkflows = {}\n",
            "ploy.py: scheduled is async: ployweb calls it synchronously",
        ),
        (
            "def scheduled(event, *, env):\n    pass\n"
            "workflows = {'scheduled': lambda *, input: input}\n",
            "ploy.py: workflows['scheduled']: the name is the one Ploy's cron: form runs under",
        ),
    ],
)
def test_ploy_form_needs_a_scheduled_function_at_start_up(tmp_path, module, message):
    path = write_module(tmp_path, module)
    with pytest.raises(ConfigError) as caught:
        registry.load(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_workflow_form_needs_no_scheduled_function(tmp_path):
    path = write_module(
        tmp_path,
        "workflows = {'a': lambda *, input: input}\n",
        cron="  TICK:\n    every: 1s\n    workflow: A\n",
    )
    path.write_text(path.read_text().replace("cron:", "workflow:\n  A: a\ncron:"))
    try:
        assert "scheduled" not in registry.load(path).workflows
    finally:
        registry.load()
