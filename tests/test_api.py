"""The HTTP API through Django's test client: every endpoint, every error code, idempotency under
concurrent requests, and one run end to end with a real worker."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Sequence

import pytest
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from engine import get_ploy_context, registry, runtime
from engine.models import Attempt, Execution, Step
from engine.queries import encode_cursor
from engine.schemas import ExecutionOut
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db

UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
DATA = {"action": "double", "value": 21}
# An id that names no execution, fixed: parallel test workers must collect the same test names.
UNKNOWN_ID = "5f0c2a9e-8d41-4b7a-9e3c-1a2b3c4d5e6f"


@pytest.fixture(autouse=True)
def _no_token(settings) -> None:
    """Open unless a test sets a token, whatever the environment running the tests says."""
    settings.PLOY_API_TOKEN = None


def make_execution(
    workflow: str = "data_processing",
    *,
    binding: str = "DATA_FLOW",
    status: str = "running",
    input: object = None,
    steps: Sequence[dict] = (),
) -> Execution:
    """An execution row in a given state; each step dict may carry an `attempts` list."""
    now = timezone.now()
    finished = status != "running"
    execution = Execution.objects.create(
        binding=binding,
        workflow=workflow,
        status=status,
        input=input,
        created_at=now,
        started_at=now,
        finished_at=now if finished else None,
        wake_at=None if finished else now,
    )
    for position, step in enumerate(steps):
        step = dict(step)
        attempts = step.pop("attempts", [])
        row = Step.objects.create(execution=execution, position=position, started_at=now, **step)
        for number, attempt in enumerate(attempts, start=1):
            Attempt.objects.create(step=row, number=number, started_at=now, **attempt)
    return execution


def trigger(client: Client, name: str, body: bytes | str = b"", **headers: str):
    return client.post(
        f"/api/workflows/{name}/trigger", body, content_type="application/json", headers=headers
    )


def run_to_the_end(execution_id: str) -> None:
    """The engine runs it here, in this process, as a worker would."""
    runtime.run_execution(execution_id)


# --- trigger ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "body", "binding", "input"),
    [
        ("DATA_FLOW", json.dumps(DATA), "DATA_FLOW", DATA),
        ("data_processing", json.dumps(DATA), "DATA_FLOW", DATA),
        ("DATA_FLOW", "", "DATA_FLOW", None),
        ("DATA_FLOW", " \n", "DATA_FLOW", None),
        ("SLEEPER", "[1, 2.5, null]", "SLEEPER", [1, 2.5, None]),
        ("SLEEPER", '"text"', "SLEEPER", "text"),
        ("SLEEPER", "1" * 4000, "SLEEPER", int("1" * 4000)),
        ("SLEEPER", "[" * 128 + "]" * 128, "SLEEPER", json.loads("[" * 128 + "]" * 128)),
    ],
)
def test_trigger_answers_202_with_the_new_execution(client, name, body, binding, input):
    response = trigger(client, name, body)
    assert response.status_code == 202
    assert response["Content-Type"].startswith("application/json")
    assert set(response.json()) == {"executionId"}
    execution = Execution.objects.get(id=response.json()["executionId"])
    assert (execution.binding, execution.status, execution.input) == (binding, "running", input)


def test_trigger_takes_a_form_encoded_curl_body_as_json(client):
    """`curl -d '{...}'` sends application/x-www-form-urlencoded; the body is still the input."""
    response = client.post(
        "/api/workflows/DATA_FLOW/trigger",
        json.dumps(DATA),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 202
    assert Execution.objects.get(id=response.json()["executionId"]).input == DATA


def test_idempotency_key_answers_the_same_execution_and_starts_nothing(client):
    first = trigger(client, "DATA_FLOW", json.dumps(DATA), Idempotency_Key="order-7")
    again = trigger(client, "data_processing", json.dumps(DATA), Idempotency_Key="order-7")
    other_workflow = trigger(client, "SLEEPER", "{}", Idempotency_Key="order-7")
    assert first.status_code == again.status_code == other_workflow.status_code == 202
    assert first.json() == again.json()
    assert other_workflow.json() != first.json()
    assert Execution.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_idempotency_key_holds_under_concurrent_requests():
    threads, barrier = 8, threading.Barrier(8)
    answers: list[tuple[int, dict]] = []

    def post() -> None:
        try:
            barrier.wait()
            response = trigger(Client(), "DATA_FLOW", json.dumps(DATA), Idempotency_Key="same")
            answers.append((response.status_code, response.json()))
        finally:
            connections.close_all()

    workers = [threading.Thread(target=post) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert len(answers) == threads
    assert {status for status, _ in answers} == {202}
    assert len({body["executionId"] for _, body in answers}) == 1
    assert Execution.objects.count() == 1


def too_long(settings) -> dict:
    settings.PLOY_MAX_PAYLOAD_BYTES = 100
    return {}


def declared_too_long(settings) -> dict:
    """A Content-Length over the limit is refused before the body is read."""
    settings.PLOY_MAX_PAYLOAD_BYTES = 100
    return {"CONTENT_LENGTH": "1000000"}


@pytest.mark.parametrize(
    ("name", "body", "setup", "status", "detail"),
    [
        ("GHOST", "{}", None, 404, "unknown workflow 'GHOST'"),
        ("DATA_FLOW", "{not json", None, 400, "not valid JSON (Expecting property name"),
        ("DATA_FLOW", '{"a": 1} trailing', None, 400, "not valid JSON (Extra data"),
        ("DATA_FLOW", b"\xff\xfe{}", None, 400, "not UTF-8"),
        ("DATA_FLOW", "NaN", None, 400, "NaN is not a JSON value"),
        ("DATA_FLOW", "[Infinity]", None, 400, "Infinity is not a JSON value"),
        ("DATA_FLOW", "1e999", None, 400, "not JSON-serialisable"),
        ("DATA_FLOW", "9" * 5000, None, 400, "not valid JSON"),
        ("DATA_FLOW", "[" * 129 + "]" * 129, None, 400, "JSON nested deeper than 128 levels"),
        ("DATA_FLOW", '{"a":' * 129 + "1" + "}" * 129, None, 400, "nested deeper than 128"),
        ("DATA_FLOW", "[" * 200_000 + "]" * 200_000, None, 400, "nested deeper than 128"),
        ("DATA_FLOW", '"' + "x" * 200 + '"', too_long, 413, "over the 100-byte limit"),
        ("DATA_FLOW", "{}", declared_too_long, 413, "is 1000000 bytes"),
        ("DATA_FLOW", '"' + "é" * 40 + '"', too_long, 413, "the workflow input is"),
    ],
)
def test_trigger_refuses_bad_requests_and_creates_nothing(
    client, settings, name, body, setup, status, detail
):
    extra = setup(settings) if setup else {}
    response = client.post(
        f"/api/workflows/{name}/trigger", body, content_type="application/json", **extra
    )
    assert response.status_code == status
    assert detail in response.json()["detail"]
    assert Execution.objects.count() == 0


@pytest.mark.parametrize(
    ("key", "detail"),
    [
        ("k" * 256, "String should have at most 255 characters"),
        ("a\x00b", "String should match pattern"),
    ],
)
def test_an_idempotency_key_too_long_or_with_nul_is_refused(client, key, detail):
    response = trigger(client, "DATA_FLOW", "{}", Idempotency_Key=key)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"header parameter 'Idempotency-Key': {detail}")
    assert Execution.objects.count() == 0


# --- get --------------------------------------------------------------------------------------


def test_get_answers_the_full_execution_in_camel_case(client):
    execution = make_execution(
        "flaky",
        binding="FLAKY",
        input={"failures": 1},
        steps=[
            {
                "name": "flaky",
                "status": "running",
                "input": {"n": 1},
                "attempts": [
                    {
                        "status": "failed",
                        "error_type": "RuntimeError",
                        "error_message": "failure number 1",
                        "error_traceback": "Traceback ...",
                        "finished_at": timezone.now(),
                    },
                    {"status": "running"},
                ],
            }
        ],
    )
    body = client.get(f"/api/executions/{execution.id}").json()
    assert body["id"] == str(execution.id)
    assert (body["binding"], body["workflow"], body["status"]) == ("FLAKY", "flaky", "running")
    assert (body["input"], body["output"], body["error"]) == ({"failures": 1}, None, None)
    assert UTC_TIME.match(body["createdAt"]) and UTC_TIME.match(body["startedAt"])
    assert body["finishedAt"] is None
    [step] = body["steps"]
    assert {k: step[k] for k in ("name", "status", "input", "output", "finishedAt")} == {
        "name": "flaky",
        "status": "running",
        "input": {"n": 1},
        "output": None,
        "finishedAt": None,
    }
    failed, running = step["attempts"]
    assert failed["number"] == 1 and failed["status"] == "failed"
    assert failed["error"] == {
        "type": "RuntimeError",
        "message": "failure number 1",
        "traceback": "Traceback ...",
    }
    assert UTC_TIME.match(failed["startedAt"]) and UTC_TIME.match(failed["finishedAt"])
    assert running == {
        "number": 2,
        "status": "running",
        "error": None,
        "startedAt": running["startedAt"],
        "finishedAt": None,
        "worker": "",  # made here by hand, not run by a worker
        "logs": [],  # nothing logged (yet)
    }


@pytest.mark.django_db(transaction=True)
def test_get_a_completed_execution_with_its_three_steps(client):
    execution_id = trigger(client, "DATA_FLOW", json.dumps(DATA)).json()["executionId"]
    run_to_the_end(execution_id)
    body = client.get(f"/api/executions/{execution_id}").json()
    assert body["status"] == "completed"
    assert body["output"] == {"action": "double", "originalValue": 21, "processedValue": 42}
    assert [step["name"] for step in body["steps"]] == ["validate", "process", "store"]
    assert {step["status"] for step in body["steps"]} == {"completed"}
    assert all(len(step["attempts"]) == 1 for step in body["steps"])
    assert UTC_TIME.match(body["finishedAt"])
    # each attempt names the worker that ran it: here, this process
    from engine import workers

    assert {step["attempts"][0]["worker"] for step in body["steps"]} == {workers.current().id}


@pytest.mark.django_db(transaction=True)
def test_the_api_and_the_python_binding_answer_the_same(client):
    execution_id = trigger(client, "DATA_FLOW", json.dumps(DATA)).json()["executionId"]
    run_to_the_end(execution_id)
    record = get_ploy_context().env.DATA_FLOW.get_execution(execution_id)
    expected = ExecutionOut.model_validate(record).model_dump(mode="json", by_alias=True)
    assert client.get(f"/api/executions/{execution_id}").json() == expected


@pytest.mark.parametrize(
    "execution_id",
    [UNKNOWN_ID, "not-a-uuid", "123", "%20", "x" * 500, "0" * 32, "%C3%A9", "%00"],
)
@pytest.mark.parametrize("method", ["get", "cancel", "rerun"])
def test_an_id_that_names_no_execution_is_404(client, execution_id, method):
    make_execution()
    if method == "get":
        response = client.get(f"/api/executions/{execution_id}")
    else:
        response = client.post(f"/api/executions/{execution_id}/{method}")
    assert response.status_code == 404
    assert response.json()["detail"].startswith("no execution with id ")
    assert Execution.objects.count() == 1


# --- cancel and rerun -------------------------------------------------------------------------


def test_cancel_answers_the_cancelled_execution_then_409(client):
    execution = make_execution(
        steps=[{"name": "validate", "status": "running", "attempts": [{"status": "running"}]}]
    )
    response = client.post(f"/api/executions/{execution.id}/cancel")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "cancelled" and UTC_TIME.match(body["finishedAt"])
    [step] = body["steps"]
    assert step["status"] == "cancelled"
    assert step["attempts"][0]["status"] == "failed"
    assert step["attempts"][0]["error"]["type"] == "Cancelled"

    again = client.post(f"/api/executions/{execution.id}/cancel")
    assert again.status_code == 409
    assert again.json() == {"detail": f"execution {execution.id} has already ended (cancelled)"}


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_cancel_an_ended_execution_is_409_and_changes_nothing(client, status):
    execution = make_execution(status=status)
    response = client.post(f"/api/executions/{execution.id}/cancel")
    assert response.status_code == 409
    assert f"has already ended ({status})" in response.json()["detail"]
    assert Execution.objects.get(id=execution.id).status == status


def test_rerun_starts_a_new_execution_with_the_same_input(client):
    execution = make_execution(status="failed", input=DATA)
    response = client.post(f"/api/executions/{execution.id}/rerun")
    assert response.status_code == 202
    rerun = Execution.objects.get(id=response.json()["executionId"])
    assert rerun.id != execution.id
    assert (rerun.binding, rerun.input, rerun.status) == ("DATA_FLOW", DATA, "running")
    assert rerun.rerun_of_id == execution.id


def test_rerun_of_a_workflow_no_longer_bound_is_404(client):
    execution = make_execution("retired", binding="RETIRED", status="completed")
    response = client.post(f"/api/executions/{execution.id}/rerun")
    assert response.status_code == 404
    assert response.json()["detail"].startswith("unknown workflow 'retired'")
    assert Execution.objects.count() == 1


# --- list -------------------------------------------------------------------------------------


def test_list_pages_newest_first_with_a_cursor_and_no_steps(client):
    ids = [str(make_execution(input={"n": n}).id) for n in range(5)]
    seen, cursor, pages = [], "", 0
    while cursor is not None:
        body = client.get("/api/executions", {"limit": 2, "cursor": cursor}).json()
        assert all("steps" not in item for item in body["items"])
        seen += [item["id"] for item in body["items"]]
        cursor, pages = body["nextCursor"], pages + 1
    assert seen == ids[::-1]
    assert pages == 3


def test_list_filters_by_workflow_and_status(client):
    running = make_execution()
    done = make_execution(status="completed")
    other = make_execution("sleeper", binding="SLEEPER")

    def ids(**query: str) -> list[str]:
        return [item["id"] for item in client.get("/api/executions", query).json()["items"]]

    assert ids() == [str(other.id), str(done.id), str(running.id)]
    assert ids(workflow="data_processing") == [str(done.id), str(running.id)]
    assert ids(workflow="data_processing", status="running") == [str(running.id)]
    assert ids(status="completed") == [str(done.id)]
    assert ids(workflow="DATA_FLOW") == [], "workflow= matches the workflow name"
    assert ids(workflow="", status="") == [str(other.id), str(done.id), str(running.id)]


def test_list_never_counts_the_table(client):
    for _ in range(3):
        make_execution()
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/api/executions", {"limit": 2})
    assert response.status_code == 200
    assert len(captured) == 1
    assert "COUNT(" not in captured[0]["sql"].upper()
    assert "OFFSET" not in captured[0]["sql"].upper()


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ({"limit": 0}, "query parameter 'limit': Input should be greater than or equal to 1"),
        ({"limit": 201}, "query parameter 'limit': Input should be less than or equal to 200"),
        ({"limit": "ten"}, "query parameter 'limit': Input should be a valid integer"),
        ({"limit": "9" * 50}, "query parameter 'limit': Input should be less than or equal"),
        ({"status": "done"}, "status must be one of running, completed, failed, cancelled"),
        ({"cursor": "!!"}, "cursor '!!' is not valid: pass the nextCursor of a previous page"),
        ({"cursor": "AAAA"}, "is not valid: pass the nextCursor"),
        ({"cursor": "é"}, "is not valid: pass the nextCursor"),
        ({"workflow": "a\x00b"}, "query parameter 'workflow': String should match pattern"),
    ],
)
def test_list_refuses_bad_limits_cursors_and_statuses_with_422(client, query, detail):
    response = client.get("/api/executions", query)
    assert response.status_code == 422
    assert detail in response.json()["detail"]
    assert "\n" not in response.json()["detail"]


def test_a_cursor_from_an_id_pages_below_it(client):
    older, newer = make_execution(), make_execution()
    body = client.get("/api/executions", {"cursor": encode_cursor(newer.id)}).json()
    assert [item["id"] for item in body["items"]] == [str(older.id)]
    assert body["nextCursor"] is None


# --- workflows --------------------------------------------------------------------------------


def test_workflows_lists_the_bindings(client):
    body = client.get("/api/workflows").json()
    config = registry.current().config
    assert [item["binding"] for item in body] == [b.binding for b in config.workflows]
    assert body[0] == {"binding": "DATA_FLOW", "name": "data_processing", "retries": 3}
    assert {"binding": "FLAKY", "name": "flaky", "retries": 2} in body


# --- auth, unknown paths, methods, docs ------------------------------------------------------

TOKEN = "s3cret-token"


@pytest.mark.parametrize(
    ("method", "path", "authorization", "status"),
    [
        ("get", "/api/workflows", None, 401),
        ("get", "/api/workflows", "Bearer wrong", 401),
        ("get", "/api/workflows", f"Basic {TOKEN}", 401),
        ("get", "/api/workflows", f"Bearer {TOKEN}x", 401),
        ("get", "/api/workflows", "Bearer", 401),
        ("get", "/api/workflows", "Bearer ünïcode", 401),
        ("get", "/api/workflows", f"Bearer {TOKEN}", 200),
        ("get", "/api/workflows", f"bearer {TOKEN}", 200),
        ("get", "/api/executions", None, 401),
        ("get", f"/api/executions/{UNKNOWN_ID}", None, 401),
        ("post", "/api/workflows/DATA_FLOW/trigger", None, 401),
        ("post", "/api/workflows/DATA_FLOW/trigger", "Bearer nope", 401),
        ("post", "/api/workflows/DATA_FLOW/trigger", f"Bearer {TOKEN}", 202),
        ("post", f"/api/executions/{UNKNOWN_ID}/cancel", None, 401),
        ("post", f"/api/executions/{UNKNOWN_ID}/rerun", None, 401),
        ("get", "/api/docs", None, 200),
        ("get", "/api/openapi.json", None, 200),
    ],
)
def test_a_set_token_is_required_except_on_the_docs(
    client, settings, method, path, authorization, status
):
    settings.PLOY_API_TOKEN = TOKEN
    headers = {"Authorization": authorization} if authorization else {}
    response = client.generic(method.upper(), path, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json()["detail"].startswith(
            ("the Authorization header is missing", "the bearer token is wrong")
        )
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert Execution.objects.count() == 0


def test_without_a_token_the_api_is_open(client, settings):
    settings.PLOY_API_TOKEN = None
    assert client.get("/api/workflows").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("get", "/api/workflows/DATA_FLOW/trigger", 405, "POST"),
        ("delete", "/api/executions", 405, "GET"),
        ("put", "/api/workflows", 405, "GET"),
        ("get", f"/api/executions/{UNKNOWN_ID}/cancel", 405, "POST"),
        ("get", "/api/nothing/here", 404, None),
        ("post", "/api/executions/", 404, None),
        ("get", "/api/executions/a/b/c", 404, None),
    ],
)
def test_unknown_paths_and_methods_answer_json(client, method, path, status, allow):
    response = client.generic(method.upper(), path)
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["detail"]
    if allow:
        assert response["Allow"] == allow


def test_the_docs_page_loads_only_local_assets(client):
    response = client.get("/api/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
    assert not [asset for asset in assets if "//" in asset], "no CDN or other host"
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert "/api/openapi.json" in html


def test_openapi_schema_lists_every_operation(client):
    schema = client.get("/api/openapi.json").json()
    assert {(path, method) for path, item in schema["paths"].items() for method in item} == {
        ("/api/workflows", "get"),
        ("/api/workflows/{name}/trigger", "post"),
        ("/api/executions/{id}/events", "post"),
        ("/api/executions", "get"),
        ("/api/executions/{id}", "get"),
        ("/api/executions/{id}/steps", "get"),
        ("/api/executions/{id}/cancel", "post"),
        ("/api/executions/cancel", "post"),
        ("/api/executions/rerun", "post"),
        ("/api/executions/{id}/rerun", "post"),
        ("/api/workers", "get"),
        ("/api/schedules", "get"),
        ("/api/schedules/{name}/pause", "post"),
        ("/api/schedules/{name}/resume", "post"),
    }


def operations(schema: dict) -> list[dict]:
    return [operation for item in schema["paths"].values() for operation in item.values()]


def test_without_a_token_the_schema_declares_no_auth(client, settings):
    settings.PLOY_API_TOKEN = None
    schema = client.get("/api/openapi.json").json()
    assert "securitySchemes" not in schema["components"]
    for operation in operations(schema):
        assert "security" not in operation, operation["operationId"]
        assert "401" not in operation["responses"], operation["operationId"]


def test_with_a_token_the_schema_declares_bearer_auth_everywhere(client, settings):
    settings.PLOY_API_TOKEN = TOKEN
    schema = client.get("/api/openapi.json").json()
    [(name, scheme)] = schema["components"]["securitySchemes"].items()
    assert scheme == {"type": "http", "scheme": "bearer"}
    for operation in operations(schema):
        assert operation["security"] == [{name: []}], operation["operationId"]
        assert "401" in operation["responses"], operation["operationId"]


def test_the_schema_says_what_a_trigger_body_may_hold(client):
    """Any JSON, but no NUL in a string or a key (the API answers 400 to those)."""
    schema = client.get("/api/openapi.json").json()
    body = schema["paths"]["/api/workflows/{name}/trigger"]["post"]["requestBody"]
    assert body["required"] is False
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JsonValue"
    }
    value = schema["components"]["schemas"]["JsonValue"]
    by_type = {choice["type"]: choice for choice in value["anyOf"]}
    assert set(by_type) == {"null", "boolean", "number", "string", "array", "object"}
    pattern = re.compile(by_type["string"]["pattern"])
    assert pattern.search("any text, é, 😀") and not pattern.search("a\x00b")
    assert by_type["object"]["propertyNames"] == {"pattern": by_type["string"]["pattern"]}
    assert "nested at most 128 deep" in value["description"]


# --- tokens are compared in constant time ---------------------------------------------------


@pytest.mark.parametrize(
    ("token", "status"),
    [(TOKEN, 200), ("s3cret-tokem", 401), ("S3CRET-TOKEN", 401), ("x" * len(TOKEN), 401)],
)
def test_a_token_of_the_right_length_is_compared_in_constant_time(
    client, settings, monkeypatch, token, status
):
    import hmac

    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr("engine.api.hmac.compare_digest", compare_digest)
    settings.PLOY_API_TOKEN = TOKEN
    assert len(token) == len(TOKEN)
    response = client.get("/api/workflows", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == status
    assert compared == [(token.encode(), TOKEN.encode())]


# --- malformed requests and server errors answer JSON ---------------------------------------


@pytest.mark.parametrize(
    ("meta", "status", "detail"),
    [
        (
            {"CONTENT_LENGTH": "abc"},
            400,
            "the Content-Length header must be the body's size in bytes, got 'abc'",
        ),
        ({"CONTENT_LENGTH": "-5"}, 400, "got '-5': send the real size, or no body for null"),
        ({"CONTENT_LENGTH": "+7"}, 400, "got '+7'"),
        ({"CONTENT_LENGTH": "9" * 5000}, 400, "got '9999"),
        ({"CONTENT_LENGTH": ""}, 202, None),  # no length, not chunked: no body (HTTP/1.1)
        (
            {"CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked"},
            411,
            "the request body was sent chunked, without a Content-Length header",
        ),
        (
            {"CONTENT_LENGTH": "7", "HTTP_TRANSFER_ENCODING": "gzip, Chunked"},
            400,
            "both Transfer-Encoding: chunked and Content-Length: send only Content-Length",
        ),
    ],
)
def test_a_malformed_content_length_is_refused_before_the_body_is_read(
    client, meta, status, detail
):
    """runserver passes "" for a missing Content-Length; Django would read "-5" as no body."""
    response = client.generic(
        "POST",
        "/api/workflows/DATA_FLOW/trigger",
        b'{"a": 1}',
        content_type="application/json",
        **meta,
    )
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    if detail:
        assert detail in response.json()["detail"]
        assert len(response.json()["detail"]) < 300
        assert Execution.objects.count() == 0


def test_an_unexpected_error_is_logged_with_its_traceback_and_answered_as_json(
    client, monkeypatch, caplog
):
    def broken(execution_id: object) -> None:
        raise RuntimeError("the database fell over")

    monkeypatch.setattr("engine.api.records.load_record_page", broken)
    response = client.get(f"/api/executions/{uuid.uuid4()}")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("application/json")
    assert response.json() == {
        "detail": "internal server error (RuntimeError): see the server's log"
    }
    [record] = [record for record in caplog.records if record.name == "engine.api"]
    assert record.levelname == "ERROR"
    assert record.exc_info and record.exc_info[0] is RuntimeError
    assert "the database fell over" in caplog.text and "Traceback" in caplog.text


def test_a_ploy_error_with_no_status_is_a_logged_500(client, monkeypatch, caplog):
    from engine.errors import PloyError

    def broken(name: str, input: object, *, idempotency_key: str | None) -> None:
        raise PloyError("not meant to reach a client")

    monkeypatch.setattr("engine.api.runtime.trigger", broken)
    response = trigger(client, "DATA_FLOW", "{}")
    assert response.status_code == 500
    assert response.json()["detail"].startswith("internal server error (PloyError)")
    assert "Traceback" in caplog.text


def test_a_bad_host_answers_json_under_api_and_html_elsewhere(client):
    """Django refuses it before any view runs, with its own handler400."""
    api = client.get("/api/workflows", headers={"Host": "bad host"})
    assert api.status_code == 400
    assert api.json()["detail"].startswith("bad request")
    page = client.get("/", headers={"Host": "bad host"})
    assert page.status_code == 400
    assert page["Content-Type"].startswith("text/html")


def test_the_site_wide_500_handler_logs_and_answers_json_under_api(rf, caplog):
    from django.urls import get_resolver

    handler = get_resolver().resolve_error_handler(500)
    for path, content_type in [("/api/executions", "application/json"), ("/", "text/html")]:
        try:
            raise RuntimeError("outside any view")
        except RuntimeError:
            response = handler(rf.get(path))
        assert response.status_code == 500
        assert response["Content-Type"].startswith(content_type)
    assert json.loads(handler(rf.get("/api/x")).content) == {
        "detail": "internal server error: see the server's log"
    }
    assert caplog.text.count("RuntimeError: outside any view") == 2


# --- end to end -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_trigger_and_get_a_completed_execution_with_a_real_worker(client, start_worker: Callable):
    start_worker(threads=2)
    response = trigger(client, "DATA_FLOW", json.dumps(DATA))
    assert response.status_code == 202
    execution_id = response.json()["executionId"]

    def completed() -> dict | None:
        body = client.get(f"/api/executions/{execution_id}").json()
        return body if body["status"] != "running" else None

    body = wait_for(completed, timeout=60)
    assert body["status"] == "completed"
    assert body["output"] == {"action": "double", "originalValue": 21, "processedValue": 42}
    assert [(step["name"], step["status"]) for step in body["steps"]] == [
        ("validate", "completed"),
        ("process", "completed"),
        ("store", "completed"),
    ]
    assert body["createdAt"] <= body["startedAt"] <= body["finishedAt"]


@pytest.mark.django_db
def test_a_chunked_body_without_length_is_refused_not_read_as_null(client):
    response = client.generic(
        "POST", "/api/workflows/DATA_FLOW/trigger", b"", HTTP_TRANSFER_ENCODING="chunked"
    )
    assert response.status_code == 411
    assert "sent chunked, without a Content-Length header" in response.json()["detail"]
    assert Execution.objects.count() == 0
