import pytest

from engine import get_ploy_context
from engine.models import Execution


@pytest.mark.django_db(transaction=True)
def test_trigger_creates_a_running_execution():
    result = get_ploy_context().env.DATA_FLOW.trigger({"action": "double", "value": 21})
    assert Execution.objects.get(id=result.execution_id).status == "running"
