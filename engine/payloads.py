"""JSON checks for everything the engine stores: inputs, step outputs and return values."""

from __future__ import annotations

import json
import re
import traceback
from typing import Any

from django.conf import settings

from engine.errors import NotJSONSerializable, PayloadTooLarge

MAX_TRACEBACK_CHARS = 50_000
# "\u0000" in JSON text, not preceded by an escaped backslash.
ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# json.dumps writes every UTF-16 surrogate as this escape (lowercase hex): text without it
# cannot hold a lone surrogate, so the exact check below runs only when it may find one.
ESCAPED_SURROGATE = "\\ud"


def to_json(value: object, what: str) -> object:
    """`value` as it will read back from the database, so a first run and a replay see the same."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise NotJSONSerializable(what, str(error)) from None
    except RecursionError:
        raise NotJSONSerializable(what, "it is nested too deeply") from None
    if ESCAPED_NUL.search(text):
        # PostgreSQL's jsonb refuses NUL characters; refuse them on every database alike.
        raise NotJSONSerializable(what, "a string contains the NUL character \\u0000")
    size = len(text.encode("utf-8"))
    if size > settings.PLOY_MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(what, size, settings.PLOY_MAX_PAYLOAD_BYTES)
    result = json.loads(text)
    if ESCAPED_SURROGATE in text and _has_lone_surrogate(result):
        # Half of a UTF-16 pair: PostgreSQL refuses it, and no page or answer can encode it.
        raise NotJSONSerializable(
            what,
            "a string contains a lone surrogate such as \\ud800, half of a UTF-16 pair "
            "that UTF-8 cannot encode",
        )
    return result


def _has_lone_surrogate(value: object) -> bool:
    """After json.loads, pairs are joined into one character: only lone halves are left."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def error_details(error: BaseException) -> dict[str, Any]:
    """What is stored of an exception: its type, message and (bounded) traceback."""
    text = "".join(traceback.format_exception(error))
    if len(text) > MAX_TRACEBACK_CHARS:
        text = "…" + text[-MAX_TRACEBACK_CHARS:]
    return {
        "type": storable(type(error).__name__),
        "message": storable(_message(error)),
        "traceback": storable(text),
    }


def _message(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:  # the exception's own __str__ (user code) failed
        return f"<{type(error).__name__}: str() failed>"


def storable(text: str) -> str:
    """`text` as every database can store it: NUL and lone surrogates written as escapes."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
