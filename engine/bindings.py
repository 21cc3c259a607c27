"""`get_ploy_context().env.<BINDING>`: workflow bindings and database bindings of ploy.yaml."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db import connection

from engine import events, queries, registry, runtime, workers
from engine.config import BindingConfig
from engine.database import Database, databases_of
from engine.errors import ConfigError, StepMisuse
from engine.records import ExecutionRecord, load_record

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")
EnvT = TypeVar("EnvT")


class WorkflowBinding(Generic[InputT, OutputT]):
    """Trigger, inspect and cancel the executions of one workflow binding; typed by the
    handler's input and output in the `PloyEnv` that `manage.py ploy_types` writes."""

    def __init__(self, config: BindingConfig) -> None:
        self.config = config

    def __repr__(self) -> str:
        return f"<WorkflowBinding {self.config.binding}: {self.config.name}>"

    def trigger(
        self,
        input: InputT = None,  # type: ignore[assignment]
        *,
        idempotency_key: str | None = None,
    ) -> runtime.TriggerResult:
        return runtime.trigger(self.config.binding, input, idempotency_key=idempotency_key)

    def run(
        self,
        input: InputT = None,  # type: ignore[assignment]
        *,
        idempotency_key: str | None = None,
    ) -> ExecutionRecord[InputT, OutputT]:
        """Run a new execution in this thread until it ends or waits; a worker goes on with
        whatever waits. With a key already used, run nothing and return that execution."""
        if connection.in_atomic_block:
            raise StepMisuse(
                f"env.{self.config.binding}.run() was called inside a database transaction: "
                "its steps must commit on their own; call it outside transaction.atomic()"
            )
        workers.current().start(threads=0)  # heartbeats: a crash here is recovered elsewhere
        result = runtime.trigger(
            self.config.binding, input, idempotency_key=idempotency_key, run_here=True
        )
        if result.execution is not None:
            runtime.run_here(result.execution)
        return self.get_execution(result.execution_id)

    def get_execution(self, execution_id: str) -> ExecutionRecord[InputT, OutputT]:
        return load_record(execution_id, workflow=self.config.name)

    def send_event(self, execution_id: str, event_type: str, payload: object = None) -> str:
        """Send an event to one of this binding's executions; its id."""
        queries.get_execution(execution_id, workflow=self.config.name)
        return events.send_event(execution_id, event_type, payload)

    def cancel(self, execution_id: str) -> ExecutionRecord[InputT, OutputT]:
        # Only this binding's workflow: check before changing anything.
        queries.get_execution(execution_id, workflow=self.config.name)
        runtime.cancel_execution(execution_id)
        return self.get_execution(execution_id)


class Env:
    """Attribute access to the bindings, as Ploy's `env.DATA_FLOW` / `env.DB`."""

    def __init__(
        self, workflows: dict[str, WorkflowBinding[Any, Any]], databases: dict[str, Database]
    ) -> None:
        self.workflows = workflows
        self.databases = databases

    def __getattr__(self, name: str) -> Any:  # typed through get_ploy_context(PloyEnv)
        bindings = {**self.workflows, **self.databases}
        if name in bindings:
            return bindings[name]
        known = ", ".join(sorted(bindings)) or "none"
        raise AttributeError(f"env has no binding {name!r} (ploy.yaml defines: {known})")

    def __dir__(self) -> list[str]:
        return sorted({*self.workflows, *self.databases})


@dataclass(frozen=True)
class PloyContext(Generic[EnvT]):
    env: EnvT


_env_cache: tuple[registry.Registry, Env] | None = None


def current_env() -> Env:
    """The Env of the current registry, built once (database bindings keep their connections)."""
    global _env_cache
    current = registry.current()
    if _env_cache is None or _env_cache[0] is not current:
        workflows: dict[str, WorkflowBinding[Any, Any]] = {
            binding.binding: WorkflowBinding(binding) for binding in current.config.workflows
        }
        _env_cache = (current, Env(workflows, databases_of(current.config)))
    return _env_cache[1]


def get_ploy_context(env_type: type[object] | None = None) -> PloyContext[Any]:
    """`env_type` is the generated `PloyEnv`: the env is typed by it, and a stale one (naming a
    binding ploy.yaml no longer has) is refused here rather than at the first use."""
    env = current_env()
    if env_type is not None:
        _check_env_type(env, env_type)
    return PloyContext(env=env)


def _check_env_type(env: Env, env_type: type[object]) -> None:
    names = {name for cls in env_type.__mro__ for name in getattr(cls, "__annotations__", {})}
    stale = sorted(names - {*env.workflows, *env.databases})
    if stale:
        module = sys.modules.get(env_type.__module__)
        raise ConfigError(
            getattr(module, "__file__", None) or env_type.__module__,
            f"{env_type.__name__} names bindings that ploy.yaml does not define "
            f"({', '.join(stale)}): run `python manage.py ploy_types`",
        )
