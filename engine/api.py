"""The HTTP API under /api/: each operation validates the request, calls engine.runtime or
engine.queries (the service layer the Python bindings use too) and serializes the answer."""

from __future__ import annotations

import functools
import hmac
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from ninja import NinjaAPI, Query, Router, Schema, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.openapi.docs import Swagger
from ninja.openapi.schema import OpenAPISchema
from ninja.params import functions as params
from ninja.security import HttpBearer

from engine import events, queries, read_answers, records, registry, rerun_api, runtime
from engine.config import shown
from engine.errors import (
    ExecutionAlreadyFinished,
    ExecutionNotFound,
    NotJSONSerializable,
    PayloadTooLarge,
    PloyError,
    ScheduleNotFound,
    UnknownWorkflow,
)
from engine.reruns import InvalidRerun
from engine.schemas import (
    JSON_VALUE,
    ErrorOut,
    EventIn,
    EventOut,
    ExecutionFilters,
    ExecutionOut,
    ExecutionPageOut,
    InvalidJSON,
    StepFilters,
    StepPageOut,
    TriggerOut,
    WorkflowOut,
    parse_json_input,
)

logger = logging.getLogger(__name__)

# The most specific class in an error's MRO decides; any other PloyError is a server fault.
STATUSES: dict[type[PloyError], int] = {
    NotJSONSerializable: 400,
    events.InvalidEvent: 400,
    UnknownWorkflow: 404,
    ExecutionNotFound: 404,
    ScheduleNotFound: 404,
    ExecutionAlreadyFinished: 409,
    PayloadTooLarge: 413,
    InvalidRerun: 422,
}
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# A Content-Length Django can read: digits only (int() would also take "-5", "+5" or " 5").
CONTENT_LENGTH = re.compile(r"[0-9]{1,4000}")

# What a client can do next with the executionId of a 202 (schemathesis follows these too).
EXECUTION_LINKS = {
    name: {"operationId": operation, "parameters": {"id": "$response.body#/executionId"}}
    for name, operation in [
        ("GetExecution", "getExecution"),
        ("CancelExecution", "cancelExecution"),
        ("RerunExecution", "rerunExecution"),
    ]
}
STARTED = {"responses": {202: {"links": EXECUTION_LINKS}}}
TRIGGER_BODY = {
    "requestBody": {
        "required": False,
        "description": "The workflow's input: a JSON document of at most PLOY_MAX_PAYLOAD_BYTES "
        "(1 MiB by default), nested at most 128 deep, whose strings hold no NUL character and no "
        "lone surrogate, and whose numbers are finite; an empty body means null.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JsonValue"}}},
    },
    **STARTED,
}


class ApiToken(HttpBearer):
    """`Authorization: Bearer <PLOY_API_TOKEN>` when a token is set; every call is open if not."""

    def __call__(self, request: HttpRequest) -> bool:
        expected = settings.PLOY_API_TOKEN
        if not expected:
            return True
        header = request.headers.get("Authorization", "")
        if not header:
            raise AuthenticationError(
                message="the Authorization header is missing: send 'Authorization: Bearer <token>'"
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not self.authenticate(request, token.strip()):
            raise AuthenticationError(
                message="the bearer token is wrong: send the value of PLOY_API_TOKEN"
            )
        return True

    def authenticate(self, request: HttpRequest, token: str) -> bool:
        # Constant time, so the answer's timing does not leak how much of the token matched.
        expected = settings.PLOY_API_TOKEN
        return expected is not None and hmac.compare_digest(token.encode(), expected.encode())


class PloyAPI(NinjaAPI):
    """NinjaAPI whose 405 answers are JSON like every other error (ninja's are plain text), and
    whose schema declares the bearer token only when one is set."""

    @property
    def urls(self) -> tuple[list[Any], str, str]:
        urls: tuple[list[Any], str, str] = super().urls
        patterns, app_name, namespace = urls
        for pattern in patterns:
            pattern.callback = _json_405(pattern.callback)
        return patterns, app_name, namespace

    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> OpenAPISchema:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["JsonValue"] = JSON_VALUE
        if not settings.PLOY_API_TOKEN:
            # Every call is open: a client reading the schema must not be asked for a token.
            components.pop("securitySchemes", None)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.pop("security", None)
                    operation["responses"].pop(401, None)
        return schema


def _json_405(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        response = view(request, *args, **kwargs)
        if not isinstance(response, HttpResponseNotAllowed):
            return response
        allowed = response["Allow"]
        refused = _error(
            request, 405, f"method {request.method} is not allowed here: use {allowed}"
        )
        refused["Allow"] = allowed
        return refused

    return wrapper


api = PloyAPI(
    title="ployweb",
    version="1",
    description="Trigger, inspect, cancel and rerun durable workflow executions.",
    urls_namespace="api",
    auth=ApiToken(),
    # Swagger UI from ninja's bundled static files; no online validator, so no outside call.
    docs=Swagger(settings={"validatorUrl": None}),
)
router = Router(by_alias=True)


@api.exception_handler(PloyError)
def ploy_error(request: HttpRequest, error: PloyError) -> HttpResponse:
    status = next((STATUSES[cls] for cls in type(error).__mro__ if cls in STATUSES), 500)
    if status == 500:
        return server_error(request, error)
    return _error(request, status, str(error))


@api.exception_handler(Exception)
def server_error(request: HttpRequest, error: Exception) -> HttpResponse:
    """A bug, not bad input: logged with its traceback, answered as JSON like any other error."""
    logger.error("%s %s failed", request.method, request.path, exc_info=error)
    return _error(
        request, 500, f"internal server error ({type(error).__name__}): see the server's log"
    )


@api.exception_handler(SuspiciousOperation)
@api.exception_handler(BadRequest)
def bad_request(request: HttpRequest, error: Exception) -> HttpResponse:
    """What Django itself answers 400 to (a malformed request), as JSON."""
    return _error(request, 400, f"bad request: {error}" if str(error) else "bad request")


@api.exception_handler(queries.InvalidQuery)
def invalid_query(request: HttpRequest, error: queries.InvalidQuery) -> HttpResponse:
    return _error(request, 422, str(error))


@api.exception_handler(ValidationError)
def invalid_parameters(request: HttpRequest, error: ValidationError) -> HttpResponse:
    """ninja's list of pydantic errors, as one readable line."""
    return _error(request, 422, "; ".join(_describe(item) for item in error.errors))


def _describe(item: dict[str, Any]) -> str:
    source, *where = [str(part) for part in item.get("loc", ())] or ["request"]
    name = ".".join(where) or source
    return f"{source} parameter {name!r}: {item.get('msg', 'is not valid')}"


@api.exception_handler(AuthenticationError)
def unauthenticated(request: HttpRequest, error: AuthenticationError) -> HttpResponse:
    response = _error(request, 401, str(error))
    response["WWW-Authenticate"] = 'Bearer realm="ployweb"'
    return response


def _errors(*statuses: int) -> dict[int, type[ErrorOut]]:
    return dict.fromkeys(statuses, ErrorOut)


BINDING_OR_WORKFLOW = params.Path(
    ...,
    description="A binding of ploy.yaml, or the name of a workflow bound there.",
    examples=["DATA_FLOW"],  # type: ignore[arg-type]  # a list, as pydantic takes it
)
IDEMPOTENCY_KEY = params.Header(
    None,
    alias="Idempotency-Key",
    max_length=255,
    pattern=r"^[^\x00]*$",
    description="The same key for the same workflow answers the same execution, starting nothing.",
)


@router.get(
    "/workflows",
    operation_id="listWorkflows",
    response={200: list[WorkflowOut], **_errors(401)},
    tags=["workflows"],
)
def list_workflows(request: HttpRequest) -> list[WorkflowOut]:
    """The bindings of ploy.yaml: what `{name}` in the trigger URL may be."""
    return [WorkflowOut.of(binding) for binding in registry.current().config.workflows]


@router.post(
    "/workflows/{name}/trigger",
    response={202: TriggerOut, **_errors(400, 401, 404, 411, 413, 422)},
    operation_id="triggerWorkflow",
    openapi_extra=TRIGGER_BODY,
    tags=["workflows"],
)
def trigger_workflow(
    request: HttpRequest,
    name: str = BINDING_OR_WORKFLOW,
    idempotency_key: str | None = IDEMPOTENCY_KEY,
) -> HttpResponse:
    """Start an execution of a binding (or of a workflow by its name) with the body as input."""
    input = _read_input(request)
    result = runtime.trigger(name, input, idempotency_key=idempotency_key)
    return _started(result.execution_id)


def _started(execution_id: str) -> HttpResponse:
    """The 202 of TriggerOut, written directly: ninja would validate and render the model
    on every trigger for the same two keys (the schema still comes from `response=`)."""
    body = json.dumps({"executionId": execution_id})
    return HttpResponse(body, status=202, content_type=api.get_content_type())


@router.get(
    "/executions",
    operation_id="listExecutions",
    response={200: ExecutionPageOut, **_errors(401, 422)},
    tags=["executions"],
)
def list_executions(request: HttpRequest, filters: Query[ExecutionFilters]) -> HttpResponse:
    """Newest first; follow nextCursor for older ones (keyset paging, no page counts)."""
    _refuse_unknown_parameters(request, ExecutionFilters)
    page = queries.list_executions(**filters.model_dump())
    return _answer(request, read_answers.execution_page_answer(page))


@router.post(
    "/executions/{id}/cancel",
    operation_id="cancelExecution",
    response={200: ExecutionOut, **_errors(401, 404, 409)},
    tags=["executions"],
)
def cancel_execution(request: HttpRequest, id: str) -> HttpResponse:
    """Cancelled at once; a worker running it stops at its next step boundary."""
    runtime.cancel_execution(id)
    return _execution(request, id)


@router.post(
    "/executions/{id}/events",
    operation_id="sendEvent",
    response={202: EventOut, **_errors(400, 401, 404, 409, 413, 422)},
    tags=["executions"],
)
def send_event(request: HttpRequest, id: str, event: EventIn) -> Status[EventOut]:
    """Send an event to a running execution; the first wait for its type receives it."""
    event_id = events.send_event(id, event.type, event.payload)
    return Status(202, EventOut(event_id=event_id))


@router.post(
    "/executions/{id}/rerun",
    operation_id="rerunExecution",
    response={202: TriggerOut, **_errors(400, 401, 404, 411, 413, 422)},
    openapi_extra={**STARTED, **rerun_api.RERUN_BODY},
    tags=["executions"],
)
def rerun_execution(request: HttpRequest, id: str) -> Status[TriggerOut]:
    """A new execution of the same workflow, with the same input unless the body gives one;
    from a step, reusing the stored outcomes of the steps before it."""
    options = rerun_api.rerun_options(rerun_api.rerun_body(request, _read_input))
    result = runtime.rerun_execution(id, from_step=options.from_step, input=options.input)
    return Status(202, TriggerOut(execution_id=result.execution_id))


@router.get(
    "/executions/{id}",
    operation_id="getExecution",
    response={200: ExecutionOut, **_errors(401, 404)},
    tags=["executions"],
)
def get_execution(request: HttpRequest, id: str) -> HttpResponse:
    """The execution with its steps and each step's attempts."""
    return _execution(request, id)


@router.get(
    "/executions/{id}/steps",
    operation_id="listExecutionSteps",
    response={200: StepPageOut, **_errors(401, 404, 422)},
    tags=["executions"],
)
def list_execution_steps(
    request: HttpRequest, id: str, filters: Query[StepFilters]
) -> HttpResponse:
    """The execution's steps in the order reached, with their attempts, a page at a time:
    start from the execution's stepsNextCursor (or without a cursor, from the first step)."""
    _refuse_unknown_parameters(request, StepFilters)
    page = records.load_step_page(id, cursor=filters.cursor, limit=filters.limit)
    return _answer(request, read_answers.step_page_answer(page))


def _refuse_unknown_parameters(request: HttpRequest, schema: type[Schema]) -> None:
    """A misspelt filter (`?stauts=failed`) must not silently list everything."""
    names = [field.alias or name for name, field in schema.model_fields.items()]
    unknown = sorted(set(request.GET) - set(names))
    if unknown:
        known = ", ".join(names)
        raise queries.InvalidQuery(f"unknown query parameter {unknown[0]!r}: use {known}")


def _execution(request: HttpRequest, execution_id: str) -> HttpResponse:
    """The first page of steps inline, so the answer stays bounded whatever the execution."""
    record, steps_next_cursor = records.load_record_page(execution_id)
    return _answer(request, read_answers.execution_answer(record, steps_next_cursor))


def _answer(request: HttpRequest, answer: dict[str, Any]) -> HttpResponse:
    """A read's answer, already in the shape its `response=` Schema documents (built by
    engine.read_answers): rendered as it is, so ninja does not validate it object by object."""
    return api.create_response(request, answer, status=200)


def _read_input(request: HttpRequest) -> object:
    """The body as JSON, refused by its declared length before it is read, then by its real one."""
    limit = settings.PLOY_MAX_PAYLOAD_BYTES
    declared = _declared_length(request)
    if declared > limit:
        raise PayloadTooLarge("the request body", declared, limit)
    try:
        body = request.body
    except RequestDataTooBig:
        raise PayloadTooLarge("the request body", declared, limit) from None
    if len(body) > limit:
        raise PayloadTooLarge("the request body", len(body), limit)
    try:
        return parse_json_input(body)
    except InvalidJSON as error:
        message = f"the request body is {error}: send a JSON document, or nothing for null"
        raise HttpError(400, message) from None


def _declared_length(request: HttpRequest) -> int:
    """Content-Length, checked before the body is read: Django would take "-5" or a chunked body
    (which WSGI does not hand it) for an empty body, and fail on "abc"."""
    declared = request.META.get("CONTENT_LENGTH") or ""  # runserver sets "" when it is absent
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        if declared:
            raise HttpError(
                400,
                "the request has both Transfer-Encoding: chunked and Content-Length: "
                "send only Content-Length",
            )
        raise HttpError(
            411,
            "the request body was sent chunked, without a Content-Length "
            "header: send it with Content-Length (as curl -d does)",
        )
    if not declared:
        return 0
    if not CONTENT_LENGTH.fullmatch(declared):
        raise HttpError(
            400,
            f"the Content-Length header must be the body's size in bytes, got {shown(declared)}: "
            "send the real size, or no body for null",
        )
    return int(declared)


@router.api_operation(ALL_METHODS, "/{path:rest}", auth=None, include_in_schema=False)
def unknown_path(request: HttpRequest, rest: str) -> HttpResponse:
    """Any other path under /api/: a JSON 404 rather than Django's HTML page."""
    return _error(request, 404, f"no API endpoint at /api/{rest}: see /api/docs for the list")


@router.api_operation(ALL_METHODS, "", auth=None, include_in_schema=False)
def api_root(request: HttpRequest) -> HttpResponse:
    return unknown_path(request, "")


def _error(request: HttpRequest, status: int, detail: str) -> HttpResponse:
    return api.create_response(request, {"detail": detail}, status=status)


from engine.schedule_api import router as schedule_router  # noqa: E402
from engine.worker_api import router as worker_router  # noqa: E402

# Before `router`, whose catch-all for unknown paths would otherwise answer /api/workers, and
# whose GET /executions/{id} would answer POST /executions/cancel with a 405.
api.add_router("", worker_router)
api.add_router("", schedule_router)
api.add_router("", rerun_api.router)
api.add_router("", router)
