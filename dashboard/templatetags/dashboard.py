"""Tags shared by the dashboard's pages: times, durations, badges; and partials on Django 5.2."""

from __future__ import annotations

from datetime import UTC, datetime

import django
from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from dashboard.values import format_duration, format_size

register = template.Library()

if django.VERSION < (6, 0):
    # {% partialdef %} and {% partial %} are built in from Django 6.0; before, they come from
    # django-template-partials. Loading this library gives them on both.
    from template_partials.templatetags.partials import register as partials

    register.tags.update(partials.tags)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as the API writes times."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


@register.simple_tag
def utc_time(moment: datetime | None, precise: bool = False) -> SafeString | str:
    """UTC text in a <time>; dashboard.js adds the browser's local time beside it."""
    if moment is None:
        return "—"
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if precise:
        text += f".{moment.microsecond // 1000:03d}"
    return format_html('<time datetime="{}" class="utc">{} UTC</time>', iso(moment), text)


@register.simple_tag
def duration(start: datetime | None, end: datetime | None) -> SafeString | str:
    """Fixed once `end` is known; while it runs, a ticker in dashboard.js keeps it current."""
    if start is None:
        return "—"
    if end is not None:
        return format_html('<span class="duration">{}</span>', format_duration(end - start))
    return format_html(
        '<span class="duration live" data-since="{}">{}</span>',
        iso(start),
        format_duration(timezone.now() - start),
    )


@register.simple_tag
def badge(status: str) -> SafeString:
    return format_html('<span class="badge badge-{}">{}</span>', status, status)


@register.filter
def size(value: int) -> str:
    return format_size(value)
