"""The trigger's 202 is written directly, not by ninja: the same bytes and headers ninja writes
for TriggerOut; and the browser's middleware leaves /api/ requests alone but serves pages."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from engine.api import api
from engine.models import Execution
from engine.schemas import TriggerOut

pytestmark = pytest.mark.django_db

TRIGGER = "/api/workflows/CHAIN/trigger"


@pytest.fixture(autouse=True)
def _no_token(settings) -> None:
    settings.PLOY_API_TOKEN = None


@pytest.mark.parametrize("headers", [{}, {"Idempotency-Key": "order-9"}])
def test_the_202_is_what_ninja_renders_for_trigger_out(client, headers):
    response = client.post(TRIGGER, b'{"steps": 1}', "application/json", headers=headers)
    again = client.post(TRIGGER, b'{"steps": 1}', "application/json", headers=headers)
    assert response.status_code == 202
    execution_id = response.json()["executionId"]
    assert Execution.objects.filter(id=execution_id).exists()
    model = TriggerOut(execution_id=execution_id).model_dump(by_alias=True)
    assert response.content.decode() == api.renderer.render(None, model, response_status=202)
    assert response["Content-Type"] == api.get_content_type() == "application/json; charset=utf-8"
    assert (again.content == response.content) == bool(headers)


def test_an_api_answer_has_no_session_cookie_and_the_security_headers(client):
    response = client.post(TRIGGER, b"{}", "application/json")
    assert response.status_code == 202
    assert not response.cookies and "Vary" not in response
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Length"] == str(len(response.content))


def test_the_dashboard_still_has_its_session_user_and_messages(client, settings):
    settings.DASHBOARD_REQUIRES_LOGIN = True
    User.objects.create_superuser("admin", "a@example.com", "pw")
    assert client.get("/").status_code == 302  # to the login page: no user
    client.login(username="admin", password="pw")
    response = client.get("/")
    assert response.status_code == 200
    assert response.wsgi_request.user.is_staff and response.wsgi_request.session.session_key
    assert hasattr(response.wsgi_request, "_messages") and hasattr(response.wsgi_request, "htmx")
