"""The bindings of ploy.yaml, typed: written by `python manage.py ploy_types`; do not edit."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.bindings import WorkflowBinding
    from engine.database import Database
    from ploy import WorkflowInput, WorkflowOutput


class PloyEnv:
    """`get_ploy_context(PloyEnv).env`: one attribute per binding of ploy.yaml."""

    DATA_FLOW: WorkflowBinding[WorkflowInput, WorkflowOutput]
    DB: Database
