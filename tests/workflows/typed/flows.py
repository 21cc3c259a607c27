"""Handlers for `manage.py ploy_types`: typed with TypedDicts, typed with generics, untyped."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:  # as a project does: ploy_env.py is written from this module
    from engine.context import StepContext
    from ploy_env import PloyEnv


class OrderInput(TypedDict):
    sku: str
    quantity: int


class OrderOutput(TypedDict):
    sku: str
    total: float


def order(*, input: OrderInput, env: PloyEnv, step: StepContext) -> OrderOutput:
    total = step.run("price", lambda: input["quantity"] * 2.5)
    return {"sku": input["sku"], "total": total}


def untyped(*, input, step):
    return step.run("echo", lambda: input)


def count(*, input: list[OrderInput] | None) -> dict[str, int]:
    return {"orders": len(input or [])}


workflows = {"order": order, "untyped": untyped, "count": count}
