"""The example workflow of the Ploy guide: validate, process and store a value."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:  # ploy_env.py is written by `manage.py ploy_types` from this module
    from engine.context import StepContext
    from ploy_env import PloyEnv


class WorkflowInput(TypedDict):
    action: str
    value: float


class WorkflowOutput(TypedDict):
    action: str
    originalValue: float
    processedValue: float


class Processed(TypedDict):
    processedValue: float


def data_processing(*, input: WorkflowInput, env: PloyEnv, step: StepContext) -> WorkflowOutput:
    def validate() -> dict[str, object]:
        if not input.get("action"):
            raise ValueError("Missing action")
        return {"valid": True, "action": input["action"]}

    step.run("validate", validate)

    def process() -> Processed:
        value = input["value"]
        if input["action"] == "double":
            result = value * 2
        elif input["action"] == "square":
            result = value * value
        else:
            result = value
        return {"processedValue": result}

    processed = step.run(
        "process", process, input={"action": input["action"], "value": input["value"]}
    )

    step.run(
        "store",
        lambda: (
            env.DB.prepare("INSERT INTO results (action, input, output) VALUES (?, ?, ?)")
            .bind(input["action"], input["value"], processed["processedValue"])
            .run()["meta"]
        ),
    )

    return {
        "action": input["action"],
        "originalValue": input["value"],
        "processedValue": processed["processedValue"],
    }


def report_failure(error: Exception, *, env: PloyEnv) -> None:
    print(f"data_processing failed: {error}")


workflows = {
    "data_processing": {"handler": data_processing, "on_error": report_failure},
}
