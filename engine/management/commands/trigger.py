"""`manage.py trigger BINDING '{"json": "input"}'`: start an execution from the shell or cron."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from engine import runtime
from engine.errors import PloyError


class Command(BaseCommand):
    help = "Trigger a workflow by binding or workflow name; prints the execution id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="binding (DATA_FLOW) or workflow name (data_processing)")
        parser.add_argument("input", nargs="?", default="null", help="the input, as JSON")
        parser.add_argument("--idempotency-key", default=None)

    def handle(
        self, *args: object, name: str, input: str, idempotency_key: str | None, **options: object
    ) -> None:
        try:
            payload = json.loads(input)
        except json.JSONDecodeError as error:
            raise CommandError(
                f"the input is not JSON ({error}): quote it, e.g. '{{\"value\": 21}}'"
            ) from None
        try:
            result = runtime.trigger(name, payload, idempotency_key=idempotency_key)
        except PloyError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(result.execution_id)
