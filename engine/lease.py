"""A worker's claim on an execution: taken atomically, renewed while it runs, checked on writes."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from engine.models import Execution, ExecutionQuerySet

logger = logging.getLogger(__name__)


class Abandon(BaseException):
    """This worker no longer owns the execution (cancelled, or its lease passed to another)."""


@dataclass(frozen=True, kw_only=True)
class Lease:
    execution_id: uuid.UUID
    owner: str
    seconds: float

    def expiry(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.seconds)

    @cached_property
    def owned(self) -> ExecutionQuerySet:
        """The execution while this lease holds it; built once, as renewals are the hot path."""
        return Execution.objects.running().filter(id=self.execution_id, lease_owner=self.owner)

    def renew(self, now: datetime) -> bool:
        """Extend the lease; False once the execution is cancelled, ended or taken over."""
        return self.owned.update(lease_expires_at=self.expiry(now)) == 1

    @contextmanager
    def hold(self, now: datetime) -> Iterator[None]:
        """A transaction that commits only while this worker still owns a running execution.

        The renewal is the transaction's first write, so it takes the row (PostgreSQL) or the
        database (SQLite) lock: a cancel either lands before it (we abandon) or waits for us.
        """
        with transaction.atomic():
            if not self.renew(now):
                raise Abandon()
            yield


def claim(execution_id: uuid.UUID, now: datetime) -> Lease | None:
    """Take the execution if it is running, due and held by no live worker; one UPDATE."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    lease = Lease(execution_id=execution_id, owner=owner, seconds=settings.PLOY_LEASE_SECONDS)
    taken = (
        Execution.objects.due(now)
        .filter(id=execution_id)
        .update(
            lease_owner=owner,
            lease_expires_at=lease.expiry(now),
            run_count=F("run_count") + 1,
            started_at=Coalesce(F("started_at"), Value(now)),
        )
    )
    return lease if taken else None


class Heartbeat:
    """Renews a lease every third of its length while a step runs longer than the lease."""

    def __init__(self, lease: Lease) -> None:
        self._lease = lease
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ploy-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._thread.join()

    def _beat(self) -> None:
        try:
            while not self._stopped.wait(self._lease.seconds / 3):
                if not self._lease.renew(timezone.now()):
                    logger.info("execution %s: lease lost", self._lease.execution_id)
                    return
        finally:
            connection.close()
