"""JSON checks for everything the engine stores: inputs, step outputs and return values."""

from __future__ import annotations

import json
import re
import traceback

from django.conf import settings

from engine.errors import NotJSONSerializable, PayloadTooLarge

MAX_TRACEBACK_CHARS = 50_000
# "\u0000" in JSON text, not preceded by an escaped backslash.
ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def to_json(value: object, what: str) -> object:
    """`value` as it will read back from the database, so a first run and a replay see the same."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise NotJSONSerializable(what, str(error)) from None
    if ESCAPED_NUL.search(text):
        # PostgreSQL's jsonb refuses NUL characters; refuse them on every database alike.
        raise NotJSONSerializable(what, "a string contains the NUL character \\u0000")
    size = len(text.encode("utf-8"))
    if size > settings.PLOY_MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(what, size, settings.PLOY_MAX_PAYLOAD_BYTES)
    return json.loads(text)


def error_details(error: BaseException) -> dict:
    """What is stored of an exception: its type, message and (bounded) traceback."""
    text = "".join(traceback.format_exception(error))
    if len(text) > MAX_TRACEBACK_CHARS:
        text = "…" + text[-MAX_TRACEBACK_CHARS:]
    return {"type": type(error).__name__, "message": str(error), "traceback": text}
