"""Filters of the attempt logs' partial (templates/dashboard/_attempt_logs.html)."""

from __future__ import annotations

import json

from django import template

register = template.Library()


@register.filter
def log_data(data: object) -> str:
    """A line's data as compact JSON (escaped by the template, as any text)."""
    return json.dumps(data, ensure_ascii=False, separators=(", ", ": "))


@register.filter
def log_time(at: str) -> str:
    """The time of day of an ISO 8601 `at` (its date is the attempt's): 10:52:02.121."""
    return at[11:23] if len(at) >= 23 else at
