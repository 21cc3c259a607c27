"""ployweb's workflow engine: durable, replayed workflows on Django and Huey."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, overload

from engine.errors import NonRetryableError, RetryAfter

if TYPE_CHECKING:
    from engine.bindings import Env, PloyContext

EnvT = TypeVar("EnvT")


@overload
def get_ploy_context() -> PloyContext[Env]: ...
@overload
def get_ploy_context(env_type: type[EnvT]) -> PloyContext[EnvT]: ...
def get_ploy_context(env_type: type[object] | None = None) -> PloyContext[Any]:
    """The bindings of ploy.yaml as `env.<BINDING>`, as in Ploy's getPloyContext(); typed as
    `env_type`, the `PloyEnv` of ploy_env.py that `manage.py ploy_types` writes."""
    from engine.bindings import get_ploy_context as build

    return build(env_type)


__all__ = ["NonRetryableError", "RetryAfter", "get_ploy_context"]
