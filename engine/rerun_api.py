"""The bodies of a rerun from a step and of the bulk actions, read strictly: an unknown key, a
wrong type or an empty filter is refused in one line, before anything changes."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Router, Schema

from engine import bulk, queries
from engine.errors import ExecutionNotFound
from engine.models import Execution, ExecutionStatus
from engine.reruns import KEEP_INPUT, InvalidRerun
from engine.schemas import ErrorOut

NO_NUL = r"^[^\u0000]*$"
DIGITS = re.compile(r"[0-9]{1,6}")
RERUN_KEYS = ("fromStep", "input")
FILTER_KEYS = ("workflow", "status", "parentId", "all")

RERUN_BODY = {
    "requestBody": {
        "required": False,
        "description": "Optional. Without a body, or with neither key, a new execution with the "
        "same input. `fromStep` reuses the stored outcomes of the steps before that step (their "
        "functions do not run) and runs it and what follows; `input`, when present (null "
        "included), replaces the execution's input.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "fromStep": {
                            "description": "The name of a top-level step that has ended.",
                            "anyOf": [
                                {"type": "string", "maxLength": 200, "pattern": NO_NUL},
                                {"type": "null"},
                            ],
                        },
                        "input": {"$ref": "#/components/schemas/JsonValue"},
                    },
                }
            }
        },
    },
}
FILTER_BODY = {
    "requestBody": {
        "required": True,
        "description": "Which executions: `workflow` and `status` as in GET /api/executions "
        "(and `parentId`, an execution's children); with no filter, `all: true` says so.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": {
                        "workflow": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 200,
                            "pattern": NO_NUL,
                            "description": "A workflow name.",
                        },
                        "status": {"type": "string", "enum": ExecutionStatus.values},
                        "parentId": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 100,
                            "pattern": NO_NUL,
                            "description": "Only the children of this execution.",
                        },
                        "all": {
                            "type": "boolean",
                            "enum": [True],
                            "description": "Act on every execution when no filter is given.",
                        },
                    },
                }
            }
        },
    },
}


@dataclass(frozen=True, kw_only=True)
class RerunOptions:
    from_step: str | None = None
    input: object = KEEP_INPUT


def rerun_body(request: HttpRequest, read_json: Callable[[HttpRequest], object]) -> object:
    """The JSON body; an empty multipart form (what Django's test client posts with no data) is
    no body, a plain rerun, as before the body existed."""
    if request.content_type == "multipart/form-data" and _is_empty_form(request):
        return None
    return read_json(request)


def _is_empty_form(request: HttpRequest) -> bool:
    """Only the closing boundary, compared as bytes: no parser runs on what a client sent."""
    boundary = (request.content_params or {}).get("boundary", "")
    declared = request.META.get("CONTENT_LENGTH") or ""
    if not boundary or not DIGITS.fullmatch(declared) or int(declared) > len(boundary) + 8:
        return False
    return request.body.strip() == f"--{boundary}--".encode()


def rerun_options(body: object) -> RerunOptions:
    """`{"fromStep": ..., "input": ...}`, each optional; no body (null) is a plain rerun."""
    if body is None:
        return RerunOptions()
    if not isinstance(body, dict):
        raise InvalidRerun(
            f"the rerun body must be a JSON object with fromStep and/or input, got "
            f'{type(body).__name__}: send {{"fromStep": "name"}}, or no body'
        )
    _refuse_unknown(body, RERUN_KEYS, InvalidRerun, "the rerun body")
    from_step = body.get("fromStep")
    if from_step is not None and (not isinstance(from_step, str) or "\x00" in from_step):
        raise InvalidRerun(f"fromStep must be a step name (a string), got {from_step!r}")
    return RerunOptions(from_step=from_step, input=body.get("input", KEEP_INPUT))


def matching_executions(body: object) -> QuerySet[Execution]:
    """The executions a bulk action's filter matches, with the list's own filters."""
    if not isinstance(body, dict):
        raise queries.InvalidQuery(
            'send a JSON object filter, e.g. {"workflow": "data_processing", "status": "failed"}'
            ', or {"all": true} for every execution'
        )
    _refuse_unknown(body, FILTER_KEYS, queries.InvalidQuery, "the filter")
    workflow = _text(body, "workflow", 200)
    status = _text(body, "status", 16)
    parent_id = _text(body, "parentId", 100)
    everything = body.get("all", False)
    if everything is not True and "all" in body:
        raise queries.InvalidQuery(f"all must be true when given, got {everything!r}")
    if not (workflow or status or parent_id or everything):
        raise queries.InvalidQuery(
            'the filter is empty: name a workflow, a status or a parentId, or send {"all": true} '
            "to act on every execution"
        )
    executions = queries.filter_executions(Execution.objects.all(), workflow, status)
    if parent_id:
        try:
            executions = executions.filter(parent_id=queries.parse_execution_id(parent_id))
        except ExecutionNotFound:
            executions = executions.none()  # as the list: an id that names none has no children
    return executions


def _text(body: dict[str, object], key: str, limit: int) -> str | None:
    value = body.get(key)
    if key not in body:
        return None
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        raise queries.InvalidQuery(
            f"{key} must be a non-empty string of at most {limit} characters, got {value!r}"
        )
    return value


def _refuse_unknown(
    body: dict[str, object], known: tuple[str, ...], error: type[Exception], what: str
) -> None:
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise error(f"{what} has an unknown key {unknown[0]!r}: use {', '.join(known)}")


class CountOut(Schema):
    count: int


router = Router(by_alias=True)


def _errors(*statuses: int) -> dict[int, type[ErrorOut]]:
    return dict.fromkeys(statuses, ErrorOut)


@router.post(
    "/executions/cancel",
    operation_id="cancelExecutions",
    response={200: CountOut, **_errors(400, 401, 411, 413, 422)},
    openapi_extra=FILTER_BODY,
    tags=["executions"],
)
def cancel_executions(request: HttpRequest) -> CountOut:
    """Cancel every running execution the filter matches, with its running descendants (in
    batches); how many it cancelled. Ended ones, and failing ones, are skipped."""
    from engine.api import _read_input

    return CountOut(count=bulk.cancel_matching(matching_executions(_read_input(request))))


@router.post(
    "/executions/rerun",
    operation_id="rerunExecutions",
    response={200: CountOut, **_errors(400, 401, 411, 413, 422)},
    openapi_extra=FILTER_BODY,
    tags=["executions"],
)
def rerun_executions(request: HttpRequest) -> CountOut:
    """A new execution, with the same input, of every execution the filter matches (in
    batches); how many it started."""
    from engine.api import _read_input

    return CountOut(count=bulk.rerun_matching(matching_executions(_read_input(request))))
