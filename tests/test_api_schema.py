"""The whole API, property-based, from its own OpenAPI schema: schemathesis generates valid and
invalid requests for every operation, alone and in linked sequences, and runs every check it has:
no 5xx, every answer as the schema says, valid data accepted, invalid data and missing auth
refused, what a 202 names can be fetched."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.test import override_settings
from hypothesis import HealthCheck
from schemathesis.checks import CHECKS, is_check_class, load_all_checks

from engine import runtime
from engine.models import Execution
from tests.test_api import make_execution

TOKEN = "schema-test-token"

# Loaded at import (only /api/openapi.json is read, no database): schemathesis' fixture-based
# loader relies on a pytest internal (`Node._nodeid`) that pytest 9.2 no longer has. With the
# token the tests set, so that the schema declares the auth the API then asks for.
with override_settings(PLOY_API_TOKEN=TOKEN):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())
# And without one: then the schema declares no auth, and no call may ask for it.
with override_settings(PLOY_API_TOKEN=None):
    open_schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())

# Every check schemathesis has (the CLI's `--checks all`), whatever its configuration enables.
load_all_checks()
ALL_CHECKS = [check for check in CHECKS.get_all() if not is_check_class(check)]


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
    case.call_and_validate(checks=ALL_CHECKS)


@pytest.fixture
def open_executions(transactional_db, settings) -> None:
    settings.PLOY_API_TOKEN = None
    add_executions()


@open_schema.parametrize()
@hypothesis.settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_without_a_token_conforms_to_its_schema(
    open_executions: None, case: schemathesis.Case
) -> None:
    case.call_and_validate(checks=ALL_CHECKS)


def test_every_check_runs() -> None:
    names = {check.__name__ for check in ALL_CHECKS}
    assert {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "missing_required_header",
        "unsupported_method",
        "use_after_free",
        "ensure_resource_availability",
        "ignored_auth",
    } <= names


class Scenario(schema.as_state_machine()):
    def setup(self) -> None:
        """The same rows at the start of every scenario, so that hypothesis can replay one."""
        Execution.objects.all().delete()
        add_executions()

    def validate_response(
        self,
        response: schemathesis.Response,
        case: schemathesis.Case,
        additional_checks: list | None = None,
        **kwargs: object,
    ) -> None:
        checks = ALL_CHECKS
        if is_unknown_step(case, response):
            # `fromStep` must name a step of that very execution, which no schema can say: a
            # made-up name is refused with 422 and the names it may take (the contract's answer).
            checks = [check for check in ALL_CHECKS if check.__name__ != "positive_data_acceptance"]
        case.validate_response(
            response,
            checks=checks,
            additional_checks=additional_checks,
            transport_kwargs=kwargs or None,
            recorder=getattr(self, "recorder", None),
        )


def is_unknown_step(case: schemathesis.Case, response: schemathesis.Response) -> bool:
    return (
        case.path.endswith("/rerun")
        and response.status_code == 422
        and "has no step" in response.text
    )


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
