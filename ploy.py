"""The example workflow of the Ploy guide: validate, process and store a value."""


def data_processing(*, input, env, step):
    def validate():
        if not input.get("action"):
            raise ValueError("Missing action")
        return {"valid": True, "action": input["action"]}

    step.run("validate", validate)

    def process():
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


def report_failure(error, *, env):
    print(f"data_processing failed: {error}")


workflows = {
    "data_processing": {"handler": data_processing, "on_error": report_failure},
}
