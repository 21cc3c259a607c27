"""The management commands: trigger from the shell, and prune old executions."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from engine import runtime
from engine.models import Attempt, Execution, Step

pytestmark = pytest.mark.django_db(transaction=True)


def call(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()


def test_trigger_prints_the_new_execution_id():
    execution_id = call("trigger", "DATA_FLOW", '{"action": "double", "value": 21}')
    assert Execution.objects.get(id=execution_id).input == {"action": "double", "value": 21}
    again = call("trigger", "DATA_FLOW", "{}", "--idempotency-key", "k1")
    assert call("trigger", "DATA_FLOW", "{}", "--idempotency-key", "k1") == again


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("trigger", "DATA_FLOW", "{bad"), "the input is not JSON"),
        (("trigger", "GHOST", "{}"), "unknown workflow 'GHOST'"),
        (("prune", "--older-than", "-1"), "--older-than must be a number of days >= 0, got -1"),
    ],
)
def test_commands_refuse_bad_input_with_one_line(args, message):
    with pytest.raises(CommandError, match=message):
        call_command(*args)
    assert Execution.objects.count() == 0


def test_prune_deletes_only_old_ended_executions_with_their_steps():
    old_done, old_failed, recent, running = (
        runtime.trigger("FLAKY", {"failures": 0}).execution_id for _ in range(4)
    )
    for execution_id in (old_done, old_failed, recent):
        runtime.run_execution(execution_id)
    long_ago = timezone.now() - timedelta(days=40)
    Execution.objects.filter(id__in=[old_done, old_failed, running]).update(finished_at=long_ago)
    Execution.objects.filter(id=old_failed).update(status="failed")

    assert call("prune", "--older-than", "30", "--dry-run") == "2 execution(s) would be deleted"
    assert call("prune", "--older-than", "30", "--status", "failed").startswith("deleted 1 ")
    assert call("prune", "--older-than", "30").startswith("deleted 1 ")
    assert set(Execution.objects.values_list("id", flat=True).iterator()) == {
        Execution.objects.get(id=recent).id,
        Execution.objects.get(id=running).id,
    }
    assert Step.objects.filter(execution_id__in=[old_done, old_failed]).count() == 0
    assert Attempt.objects.filter(step__execution_id=old_done).count() == 0
