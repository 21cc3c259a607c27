"""`get_ploy_context().env.<BINDING>`: workflow bindings and database bindings of ploy.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from engine import events, queries, registry, runtime, workers
from engine.config import BindingConfig
from engine.database import Database, databases_of
from engine.errors import StepMisuse
from engine.records import ExecutionRecord, load_record


class WorkflowBinding:
    """Trigger, inspect and cancel the executions of one workflow binding."""

    def __init__(self, config: BindingConfig) -> None:
        self.config = config

    def __repr__(self) -> str:
        return f"<WorkflowBinding {self.config.binding}: {self.config.name}>"

    def trigger(
        self, input: object = None, *, idempotency_key: str | None = None
    ) -> runtime.TriggerResult:
        return runtime.trigger(self.config.binding, input, idempotency_key=idempotency_key)

    def run(self, input: object = None, *, idempotency_key: str | None = None) -> ExecutionRecord:
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

    def get_execution(self, execution_id: str) -> ExecutionRecord:
        return load_record(execution_id, workflow=self.config.name)

    def send_event(self, execution_id: str, event_type: str, payload: object = None) -> str:
        """Send an event to one of this binding's executions; its id."""
        queries.get_execution(execution_id, workflow=self.config.name)
        return events.send_event(execution_id, event_type, payload)

    def cancel(self, execution_id: str) -> ExecutionRecord:
        # Only this binding's workflow: check before changing anything.
        queries.get_execution(execution_id, workflow=self.config.name)
        runtime.cancel_execution(execution_id)
        return self.get_execution(execution_id)


class Env:
    """Attribute access to the bindings, as Ploy's `env.DATA_FLOW` / `env.DB`."""

    def __init__(self, workflows: dict[str, WorkflowBinding], databases: dict[str, Database]):
        self.workflows = workflows
        self.databases = databases

    def __getattr__(self, name: str) -> WorkflowBinding | Database:
        bindings = {**self.workflows, **self.databases}
        if name in bindings:
            return bindings[name]
        known = ", ".join(sorted(bindings)) or "none"
        raise AttributeError(f"env has no binding {name!r} (ploy.yaml defines: {known})")

    def __dir__(self) -> list[str]:
        return sorted({*self.workflows, *self.databases})


@dataclass(frozen=True)
class PloyContext:
    env: Env


_env_cache: tuple[registry.Registry, Env] | None = None


def current_env() -> Env:
    """The Env of the current registry, built once (database bindings keep their connections)."""
    global _env_cache
    current = registry.current()
    if _env_cache is None or _env_cache[0] is not current:
        workflows = {
            binding.binding: WorkflowBinding(binding) for binding in current.config.workflows
        }
        _env_cache = (current, Env(workflows, databases_of(current.config)))
    return _env_cache[1]


def get_ploy_context() -> PloyContext:
    return PloyContext(env=current_env())
