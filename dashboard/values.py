"""How stored JSON values and durations read on the page: pretty, highlighted, escaped, bounded."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from html import escape  # Django's escape() is this one behind a lazy-string check per call

from django.utils.safestring import SafeString, mark_safe

# Above this many characters a value is cut, with a link to see all of it.
TRUNCATE_AT = 10_000
TOKEN = re.compile(
    r'(?P<string>"(?:\\.|[^"\\])*")(?P<colon>\s*:)?'
    r"|(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"
    r"|(?P<literal>\btrue\b|\bfalse\b|\bnull\b)"
)


@dataclass(frozen=True, kw_only=True)
class JsonValue:
    """A value ready to show: `html` is escaped and highlighted, `text` is for the copy button."""

    text: str
    html: SafeString
    size: int
    truncated: bool
    is_null: bool


def pretty(value: object, *, full: bool = False) -> JsonValue:
    """JSON with two-space indents; cut at TRUNCATE_AT characters unless `full`."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    truncated = not full and len(text) > TRUNCATE_AT
    shown = text[:TRUNCATE_AT] if truncated else text
    return JsonValue(
        text=text,
        html=highlight(shown),
        size=len(text.encode("utf-8")),
        truncated=truncated,
        is_null=value is None,
    )


def preview(head: str, size: int) -> JsonValue:
    """The first characters of a stored value too big for the page (as stored, not indented)."""
    return JsonValue(text=head, html=highlight(head), size=size, truncated=True, is_null=False)


def highlight(text: str) -> SafeString:
    """Wrap JSON tokens in spans; every character of `text` goes through escape() exactly once."""
    parts: list[str] = []
    position = 0
    for match in TOKEN.finditer(text):
        parts.append(escape(text[position : match.start()]))
        parts.append(_token_html(match))
        position = match.end()
    parts.append(escape(text[position:]))
    return mark_safe("".join(parts))  # noqa: S308 - built only from escaped pieces


def _token_html(match: re.Match[str]) -> str:
    """Numbers, literals and a key's colon are made of characters escape() leaves alone."""
    if match["string"] is not None:
        kind = "key" if match["colon"] else "str"
        return f'<span class="j-{kind}">{escape(match["string"])}</span>{match["colon"] or ""}'
    if match["number"] is not None:
        return f'<span class="j-num">{match["number"]}</span>'
    return f'<span class="j-lit">{match["literal"]}</span>'


def format_duration(delta: timedelta | None) -> str:
    """Short and exact enough to compare steps: 12 ms, 1.25 s, 2 m 05 s, 3 h 04 m."""
    if delta is None:
        return "—"
    ms = max(delta.total_seconds() * 1000, 0)
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} m"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"


def format_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"
