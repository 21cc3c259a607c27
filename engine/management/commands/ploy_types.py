"""`manage.py ploy_types [--check]`: write ploy_env.py, or check in CI that it is up to date."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from engine import registry, typegen
from engine.errors import PloyError


class Command(BaseCommand):
    help = "Write ploy_env.py beside ploy.yaml: the bindings typed from the handlers' annotations."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check",
            action="store_true",
            help="write nothing; exit 1 when ploy_env.py is missing or out of date",
        )

    def handle(self, *args: object, check: bool, **options: object) -> None:
        try:
            current = registry.read()
            if check:
                self._check(current)
                return
            path = typegen.write(current)
        except PloyError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"Wrote {path}")

    def _check(self, current: registry.Registry) -> None:
        if not typegen.is_up_to_date(current):
            path = typegen.env_path(current.config)
            raise CommandError(
                f"{path} is out of date with ploy.yaml and its handlers: "
                "run `python manage.py ploy_types` and commit the file"
            )
        self.stdout.write(f"{typegen.env_path(current.config)} is up to date")
