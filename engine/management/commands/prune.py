"""`manage.py prune --older-than 30`: delete ended executions, with their steps, in batches."""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from engine.models import FINISHED_STATUSES, Execution

BATCH = 500


class Command(BaseCommand):
    help = "Delete executions that ended more than N days ago; running ones are never touched."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=float, required=True, metavar="DAYS")
        parser.add_argument(
            "--status",
            action="append",
            choices=[str(status) for status in FINISHED_STATUSES],
            help="only these end states (repeatable); default: all of them",
        )
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(
        self,
        *args: object,
        older_than: float,
        status: list[str] | None,
        dry_run: bool,
        **options: object,
    ) -> None:
        if older_than < 0:
            raise CommandError(f"--older-than must be a number of days >= 0, got {older_than}")
        cutoff = timezone.now() - timedelta(days=older_than)
        ended = Execution.objects.filter(
            status__in=status or FINISHED_STATUSES, finished_at__lt=cutoff
        )
        if dry_run:
            self.stdout.write(f"{ended.count()} execution(s) would be deleted")
            return
        deleted = 0
        # Small batches keep each write transaction short, so workers are never held up long.
        while batch := list(ended.values_list("id", flat=True)[:BATCH]):
            with transaction.atomic():
                Execution.objects.filter(id__in=batch).delete()
            deleted += len(batch)
        self.stdout.write(
            f"deleted {deleted} execution(s) that ended before {cutoff:%Y-%m-%d %H:%M} UTC"
        )
