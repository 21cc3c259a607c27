"""ployweb's workflow engine: durable, replayed workflows on Django and Huey."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.errors import NonRetryableError, RetryAfter

if TYPE_CHECKING:
    from engine.bindings import PloyContext


def get_ploy_context() -> PloyContext:
    """The bindings of ploy.yaml as `env.<BINDING>`, as in Ploy's getPloyContext()."""
    from engine.bindings import get_ploy_context as build

    return build()


__all__ = ["NonRetryableError", "RetryAfter", "get_ploy_context"]
