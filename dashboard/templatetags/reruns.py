"""Template filters of reruns from a step and of the bulk actions."""

from __future__ import annotations

from django import template
from django.urls import reverse

from dashboard.queries import ListFilters
from engine.models import Step
from engine.reruns import can_start_from

register = template.Library()


@register.filter
def can_rerun_from(step: Step) -> bool:
    """Whether the page offers "Rerun from here" on this step."""
    return can_start_from(step)


@register.simple_tag
def bulk_url(action: str, filters: ListFilters) -> str:
    """The confirmation of a bulk action over the list's current filters."""
    from dashboard.bulk_views import filter_query

    query = filter_query(filters)
    path = reverse("dashboard:confirm_bulk", args=[action])
    return f"{path}?{query}" if query else path
