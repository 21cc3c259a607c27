"""The whole API, property-based, from its own OpenAPI schema: schemathesis generates valid and
invalid requests for every operation; no answer may be a 5xx or stray from the schema."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck

from engine import runtime
from engine.models import Execution
from tests.test_api import make_execution

TOKEN = "schema-test-token"

# Loaded at import (only /api/openapi.json is read, no database): schemathesis' fixture-based
# loader relies on a pytest internal (`Node._nodeid`) that pytest 9.2 no longer has.
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())


@schema.auth()
class BearerToken:
    """The valid token on every generated call; schemathesis itself tries missing and bad ones."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return TOKEN

    def set(self, case: schemathesis.Case, token: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


def add_executions() -> None:
    """Executions in every state to find, cancel and rerun."""
    for status in ("running", "completed", "failed", "cancelled"):
        make_execution(status=status, input={"action": "double", "value": 21})
    runtime.trigger("SLEEPER", {"ms": 10})


@pytest.fixture
def executions(transactional_db, settings) -> None:
    """Some executions, and a token set so that auth is tested too.

    The real WSGI application closes the connection after each request, as in production:
    hence a transactional database rather than one transaction around the whole test.
    """
    settings.PLOY_API_TOKEN = TOKEN
    add_executions()


@schema.parametrize()
@hypothesis.settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_conforms_to_its_schema(executions: None, case: schemathesis.Case) -> None:
    case.call_and_validate()


class Scenario(schema.as_state_machine()):
    def setup(self) -> None:
        """The same rows at the start of every scenario, so that hypothesis can replay one."""
        Execution.objects.all().delete()
        add_executions()


def test_sequences_of_calls_follow_the_schema_links(executions: None) -> None:
    """Trigger, then get, cancel and rerun what it answered, in generated orders."""
    Scenario.run(
        settings=hypothesis.settings(
            max_examples=60,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
