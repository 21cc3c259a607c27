"""Every error a user can cause, each a one-line message naming the problem and the fix."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured


class PloyError(Exception):
    """Base of the errors ployweb reports to users."""


class ConfigError(PloyError, ImproperlyConfigured):
    """ploy.yaml or the workflow module is wrong; refused at start-up."""

    def __init__(self, path: object, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class UnknownWorkflow(PloyError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"unknown workflow {name!r}: use a binding or workflow name from ploy.yaml"
        )


class ExecutionNotFound(PloyError):
    def __init__(self, execution_id: object) -> None:
        from engine.config import shown

        self.execution_id = str(execution_id)
        super().__init__(f"no execution with id {shown(self.execution_id)}")


class ScheduleNotFound(PloyError):
    def __init__(self, name: str) -> None:
        from engine.config import shown

        self.name = name
        super().__init__(f"no schedule named {shown(name)}: use a name of ploy.yaml's cron:")


class ExecutionAlreadyFinished(PloyError):
    def __init__(self, execution_id: object, status: str) -> None:
        self.execution_id = str(execution_id)
        self.status = status
        super().__init__(f"execution {self.execution_id} has already ended ({status})")


class NotJSONSerializable(PloyError):
    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        super().__init__(
            f"{what} is not JSON-serialisable ({reason}): return dicts, lists, "
            "strings, numbers, booleans or None"
        )


class PayloadTooLarge(PloyError):
    def __init__(self, what: str, size: int, limit: int) -> None:
        self.what, self.size, self.limit = what, size, limit
        super().__init__(
            f"{what} is {size} bytes, over the {limit}-byte limit (PLOY_MAX_PAYLOAD_BYTES): "
            "store large data elsewhere and pass a reference"
        )


class StepFailed(PloyError):
    """Raised by step.run() once a step has used up its attempts; the handler may catch it."""

    def __init__(self, step_name: str, error_type: str, error_message: str, attempts: int) -> None:
        self.step_name = step_name
        self.error_type = error_type
        self.error_message = error_message
        self.attempts = attempts
        noun = "attempt" if attempts == 1 else "attempts"
        super().__init__(
            f"step {step_name!r} failed after {attempts} {noun}: {error_type}: {error_message}"
        )


class EventTimeout(StepFailed):
    """`step.wait_for_event` saw no event of its type before its timeout; not retried."""

    def __init__(self, step_name: str, event_type: str, timeout_ms: float) -> None:
        PloyError.__init__(
            self,
            f"step {step_name!r} waited {timeout_ms:g} ms for an event of type {event_type!r} "
            "and none came",
        )
        self.step_name = step_name
        self.error_type = "EventTimeout"
        self.error_message = str(self)
        self.attempts = 0
        self.event_type = event_type


class StepMisuse(PloyError):
    """`step` used in a way that cannot work (nested steps, an async step function)."""


class RecordedFailure(PloyError):
    """A failure decided by an earlier run, given to on_error when that run died before it."""

    def __init__(self, details: dict[str, Any]) -> None:
        self.details = details
        self.type = details.get("type", "Error")
        super().__init__(f"{self.type}: {details.get('message', '')}")


class NonRetryableError(Exception):
    """Raise it from a step to fail the step at once, whatever retries remain."""


class RetryAfter(Exception):
    """Raise it from a step to retry after `seconds` instead of the exponential back-off."""

    def __init__(self, seconds: float, message: str = "") -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
            raise ValueError(f"RetryAfter(seconds) needs a number of seconds >= 0, got {seconds!r}")
        super().__init__(message or f"retry after {seconds:g} s")
        self.seconds = float(seconds)


class CodeChanged(PloyError):
    """A replay reached a step whose name differs from the one stored at that position."""

    def __init__(self, position: int, stored: str, reached: str) -> None:
        self.position, self.stored, self.reached = position, stored, reached
        super().__init__(
            f"the workflow's code changed under this execution: step {position + 1} was "
            f"{stored!r} and is now {reached!r}; finish or cancel the executions started "
            "before a deploy that renames, reorders or removes steps"
        )


class StepTimeout(PloyError):
    """A step attempt ran longer than its `timeout`; retried like any error."""

    def __init__(self, step_name: str, seconds: float) -> None:
        self.step_name, self.seconds = step_name, seconds
        super().__init__(
            f"step {step_name!r} ran longer than its timeout of {seconds:g} s: its result, if it "
            "ever comes, is discarded"
        )


class Timeout(PloyError):
    """The execution ran past its binding's `timeout` (ploy.yaml); it fails, on_error runs."""

    def __init__(self, binding: str, seconds: float) -> None:
        self.binding, self.seconds = binding, seconds
        super().__init__(
            f"the execution ran past the {seconds:g} s timeout of {binding} (ploy.yaml "
            f"workflow.{binding}.timeout): raise it there, or make the work shorter"
        )
