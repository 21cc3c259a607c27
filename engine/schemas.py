"""The HTTP API's JSON shapes (camelCase, like Ploy's): they validate requests and document
every answer; engine.read_answers builds the read answers to match them. Also the one reader of
user-typed JSON input shared by the API and the admin's trigger form."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from ninja import Field, Schema
from pydantic import AfterValidator, ConfigDict, PlainSerializer, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from engine.config import BindingConfig
from engine.models import AttemptStatus, ExecutionStatus, StepStatus
from engine.queries import MAX_PAGE_SIZE, MAX_STEP_PAGE_SIZE, STEP_CURSOR

# Deeper documents parse or not depending on how deep the stack already is; a fixed limit
# keeps every later reader (API, admin, dashboard, worker) far from Python's recursion limit.
MAX_DEPTH = 128


class InvalidJSON(ValueError):
    """User input that is not a JSON document; the message says where and why, and `problem`,
    `line` and `column` (where the parser knows them) let a form say it its own way."""

    def __init__(
        self, message: str, *, problem: str, line: int | None = None, column: int | None = None
    ) -> None:
        super().__init__(message)
        self.problem, self.line, self.column = problem, line, column


def parse_json_input(raw: bytes | str) -> object:
    """A workflow input from raw text: empty means None; NaN, Infinity and bad UTF-8 are refused."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            problem = f"{error.reason} at byte {error.start}"
            raise InvalidJSON(f"not UTF-8 text ({problem})", problem=problem) from None
    if not raw.strip(" \t\r\n"):
        return None
    too_deep = f"JSON nested deeper than {MAX_DEPTH} levels"
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        where = f"at line {error.lineno} column {error.colno}"
        raise InvalidJSON(
            f"not valid JSON ({error.msg} {where})",
            problem=error.msg,
            line=error.lineno,
            column=error.colno,
        ) from None
    except RecursionError:
        raise InvalidJSON(too_deep, problem=too_deep) from None
    except ValueError as error:
        # Integers over Python's digit limit, or NaN / Infinity (refused by _refuse_constant).
        problem = str(error).split(";")[0]
        raise InvalidJSON(f"not valid JSON ({problem})", problem=problem) from None
    if _depth(value) > MAX_DEPTH:
        raise InvalidJSON(too_deep, problem=too_deep)
    return value


def _depth(value: object) -> int:
    """Nesting depth, counted without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            pending.extend((child, depth + 1) for child in item)
    return deepest


# What parse_json_input and to_json accept, as JSON Schema (the API's trigger body). No schema
# keyword bounds the depth, so the description states it.
NO_NUL = r"^[^\u0000]*$"
JSON_VALUE = {
    "description": f"Any JSON value nested at most {MAX_DEPTH} deep whose strings (keys too) "
    "hold no NUL character and no lone surrogate, and whose numbers are finite.",
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "number"},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": "#/components/schemas/JsonValue"},
        },
    ],
}


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value")


def utc_text(value: datetime) -> str:
    """ISO 8601 in UTC ending in Z, as the contract (and JavaScript's Date) write it."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


UtcTime = Annotated[
    datetime,
    PlainSerializer(utc_text, return_type=str),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "examples": ["2026-11-25T14:55:23.308Z"]}
    ),
]


class CamelSchema(Schema):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, use_enum_values=True)


class ErrorOut(CamelSchema):
    detail: str = Field(description="What was wrong with the request, in one line.")


class TriggerOut(CamelSchema):
    execution_id: str


class AttemptErrorOut(CamelSchema):
    type: str
    message: str
    traceback: str


class AttemptLogLineOut(CamelSchema):
    at: str = Field(description="When it was written: ISO 8601 in UTC ending in Z.")
    level: str = Field(
        description="The logging level (INFO, WARNING...), PRINT for print(), NOTE for a cut."
    )
    logger: str = Field(description="The logger's name, stdout or stderr for print(), step.log.")
    message: str
    data: dict[str, Any] | None = Field(
        None, description="step.log's keyword arguments, or a log record's extra= fields."
    )


class AttemptOut(CamelSchema):
    number: int
    status: AttemptStatus
    error: AttemptErrorOut | None
    started_at: UtcTime | None
    finished_at: UtcTime | None
    worker: str = Field(description="the id of the worker that ran it (GET /api/workers)")
    logs: list[AttemptLogLineOut] = Field(
        default_factory=list,
        description="What the attempt's body logged, printed or passed to step.log, in order; "
        "bounded (PLOY_ATTEMPT_LOG_BYTES, 64 KiB): past it the middle is cut, with a note.",
    )


class StepOut(CamelSchema):
    name: str
    status: StepStatus
    input: object
    output: object
    error: dict[str, Any] | None
    started_at: UtcTime | None
    finished_at: UtcTime | None
    wake_at: UtcTime | None = Field(
        description="When a sleep ends, the next retry is due, or a wait times out."
    )
    attempts: list[AttemptOut]
    child_id: str | None = Field(None, description="The child execution of an invoke step.")
    reused_from: str | None = Field(
        None,
        description="A step copied into a rerun from a later step: the execution whose run "
        "produced its outcome (and holds its attempts); null for a step run here.",
    )


class ExecutionSummaryOut(CamelSchema):
    id: str
    binding: str
    workflow: str
    status: ExecutionStatus
    input: object
    output: object
    error: dict[str, Any] | None
    created_at: UtcTime
    started_at: UtcTime | None
    finished_at: UtcTime | None
    parent_id: str | None = Field(
        None, description="The execution whose invoke step started this one; null at the top."
    )
    rerun_of: str | None = Field(None, description="The execution this one is a rerun of.")
    from_step: str | None = Field(
        None,
        description="A rerun from a step: that step of rerunOf, the steps before it reused.",
    )
    concurrency_slot: str | None = Field(
        None,
        description="A binding with `concurrency`: `waiting` (for a slot: not started yet) or "
        "`holding` (from its start until it ends); null without a limit.",
    )
    code_fingerprint: str | None = Field(
        None,
        description="A short hash of the workflow's code when the execution was created; a "
        "replay runs the current code, whose hash may differ. Null for older executions.",
    )


class ExecutionOut(ExecutionSummaryOut):
    steps: list[StepOut] = Field(
        description="The first 100 steps in the order reached; stepsNextCursor pages the rest."
    )
    steps_next_cursor: str | None = Field(
        None,
        description="Pass as `cursor` to GET /api/executions/{id}/steps for the steps after "
        "these; null when every step is listed here.",
    )


class StepPageOut(CamelSchema):
    items: list[StepOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next steps; null after the last one."
    )


class ExecutionPageOut(CamelSchema):
    items: list[ExecutionSummaryOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class WorkflowOut(CamelSchema):
    binding: str
    name: str
    retries: int

    @classmethod
    def of(cls, binding: BindingConfig) -> WorkflowOut:
        return cls(binding=binding.binding, name=binding.name, retries=binding.retries)


# What encode_cursor writes: a UUID's 16 bytes in unpadded URL-safe base64 (or nothing).
CURSOR_PATTERN = re.compile(r"^([A-Za-z0-9_-]{22})?$")


def _check_cursor(value: str | None) -> str | None:
    """Stricter than decode_cursor (which skips stray characters), so the schema's pattern holds."""
    if value and not CURSOR_PATTERN.match(value):
        raise PydanticCustomError(
            "invalid_cursor",
            "cursor {cursor} is not valid: pass the nextCursor of a previous page",
            {"cursor": repr(value)},
        )
    return value


# Checked by queries.list_executions, so that its message names the allowed values.
StatusFilter = Annotated[
    str | None,
    WithJsonSchema({"type": "string", "enum": ["", *ExecutionStatus.values]}),
]
Cursor = Annotated[
    str | None,
    AfterValidator(_check_cursor),
    WithJsonSchema({"type": "string", "pattern": CURSOR_PATTERN.pattern}),
]


class ExecutionFilters(Schema):
    """Query parameters of GET /api/executions; an empty value means no filter."""

    workflow: str | None = Field(
        None, max_length=200, pattern=r"^[^\x00]*$", description="A workflow name."
    )
    status: StatusFilter = Field(None, description="An execution status.")
    limit: int = Field(50, ge=1, le=MAX_PAGE_SIZE)
    cursor: Cursor = Field(None, description="The nextCursor of the previous page.")
    parent_id: str | None = Field(
        None, alias="parentId", max_length=100, description="Only the children of this execution."
    )


class EventIn(Schema):
    """POST /api/executions/{id}/events."""

    # Not blank, no NUL (a name like "approval").
    type: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]*[^\s\x00][^\x00]*$")
    payload: object = None


class EventOut(CamelSchema):
    event_id: str


StepCursor = Annotated[
    str | None,
    WithJsonSchema({"type": "string", "pattern": f"^({STEP_CURSOR.pattern})?$"}),
]


class StepFilters(Schema):
    """Query parameters of GET /api/executions/{id}/steps."""

    cursor: StepCursor = Field(
        None, max_length=20, description="The stepsNextCursor or nextCursor of a previous answer."
    )
    limit: int = Field(100, ge=1, le=MAX_STEP_PAGE_SIZE)
