"""Start-up: load ploy.yaml and the workflow module once, in every process."""

from __future__ import annotations

from django.apps import AppConfig


class EngineConfig(AppConfig):
    name = "engine"
    verbose_name = "Workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from engine import count_schema, database, registry, schedules

        registry.load()
        post_migrate.connect(database.migrate_after_django, sender=self)
        post_migrate.connect(schedules.sync_after_migrate, sender=self)
        post_migrate.connect(count_schema.repair_after_migrate, sender=self)
