"""What every engine admin page shares: read-only rows, payloads as escaped JSON, links."""

from __future__ import annotations

import json

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from engine.models import Attempt, Execution, Step


def pretty_json(value: object) -> SafeString:
    """Indented, and escaped by format_html: stored payloads are user data."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return format_html('<pre style="margin: 0; white-space: pre-wrap">{}</pre>', text)


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
    """Input, output and error of an execution or a step, as indented, escaped JSON."""

    @admin.display(description="input")
    def input_json(self, row: Execution | Step) -> SafeString:
        return pretty_json(row.input)

    @admin.display(description="output")
    def output_json(self, row: Execution | Step) -> SafeString:
        return pretty_json(row.output)

    @admin.display(description="error")
    def error_json(self, row: Execution | Step) -> SafeString:
        return pretty_json(row.error)
