"""The benchmark's workflow: `steps` trivial steps, then an optional durable sleep."""


def chain(*, input, step):
    total = 0
    for number in range(input["steps"]):
        total += step.run(f"step-{number}", lambda number=number: number)
    if input.get("sleep_ms"):
        step.sleep(input["sleep_ms"])
    return {"total": total}


workflows = {"chain": chain}
