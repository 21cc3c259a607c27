"""What every engine admin page shares: read-only rows, payloads as escaped JSON, links."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.contrib import admin
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from engine.models import Attempt, Execution, Step

# A stored value (up to PLOY_MAX_PAYLOAD_BYTES, 1 MB by default) is shown up to this many
# characters on a change page, and up to CELL_CHARS in an inline's row, with a link to it whole.
PAGE_CHARS = 10_000
CELL_CHARS = 300
PRE = '<pre style="margin: 0; white-space: pre-wrap">{}</pre>'


def pretty_json(
    value: object, *, limit: int = PAGE_CHARS, whole_url: Callable[[], str] | None = None
) -> SafeString:
    """Indented, and escaped by format_html: stored payloads are user data. A value longer than
    `limit` is shown cut, on one line (indenting a big value is most of a page's time)."""
    compact = json.dumps(value, ensure_ascii=False)
    if len(compact) <= limit:
        text = compact if limit < PAGE_CHARS else json.dumps(value, indent=2, ensure_ascii=False)
        return format_html(PRE, text)
    size = f"the first {limit:,} of {len(compact):,} characters"
    cut = format_html(PRE, compact[:limit] + "…")
    url = whole_url() if whole_url else ""
    if not url:
        return format_html('{}<div class="help">{}</div>', cut, size)
    link = format_html('<a href="{}">the whole value</a>', url)
    return format_html('{}<div class="help">{}; {}</div>', cut, size, link)


def stored_value_url(execution_id: object, field: str, position: int | None = None) -> str:
    """The dashboard's link to a whole input or output (JSON), if the dashboard is installed."""
    try:
        url = reverse("dashboard:stored_value", args=[execution_id])
    except NoReverseMatch:
        return ""
    return f"{url}?of={field}" + ("" if position is None else f"&step={position + 1}")


def traceback_html(attempt: Attempt) -> SafeString | str:
    if not attempt.error_traceback:
        return "-"
    return format_html('<pre style="margin: 0">{}</pre>', attempt.error_traceback)


def execution_link(execution_id: object) -> SafeString:
    url = reverse("admin:engine_execution_change", args=[execution_id])
    return format_html('<a href="{}">{}</a>', url, execution_id)


def children_url(execution_id: object) -> str:
    return reverse("admin:engine_execution_changelist") + f"?parent__id__exact={execution_id}"


class ReadOnlyMixin:
    """Rows change only through engine.runtime, never by editing them here."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class PayloadMixin:
    """Input, output and error of an execution or a step, as indented, escaped JSON, cut at
    `payload_chars`."""

    payload_chars = PAGE_CHARS

    @admin.display(description="input")
    def input_json(self, row: Execution | Step) -> SafeString:
        return pretty_json(row.input, limit=self.payload_chars, whole_url=_whole(row, "input"))

    @admin.display(description="output")
    def output_json(self, row: Execution | Step) -> SafeString:
        return pretty_json(row.output, limit=self.payload_chars, whole_url=_whole(row, "output"))

    @admin.display(description="error")
    def error_json(self, row: Execution | Step) -> SafeString:
        return pretty_json(row.error, limit=self.payload_chars)


def _whole(row: Execution | Step, field: str) -> Callable[[], str]:
    if isinstance(row, Step):
        return lambda: stored_value_url(row.execution_id, field, row.position)
    return lambda: stored_value_url(row.pk, field)
