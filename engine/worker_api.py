"""`GET /api/workers`, and the read the dashboard's Workers page shares with it: each worker as it
stands by the database's clock, with the executions it holds now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.http import HttpRequest
from ninja import Field, Router

from engine import clock
from engine.models import Execution, Worker, WorkerStatus
from engine.schemas import CamelSchema, ErrorOut, UtcTime
from engine.workers import DEAD_ROWS_KEPT, LIVE_STATUSES, timeout

router = Router(by_alias=True)


@dataclass(frozen=True, kw_only=True)
class WorkerRecord:
    id: str
    host: str
    pid: int
    threads: int
    status: WorkerStatus
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None
    running: list[str]

    @property
    def is_dead(self) -> bool:
        return self.status == WorkerStatus.DEAD


def effective_status(worker: Worker, now: datetime) -> WorkerStatus:
    """A live row silent for the timeout is dead, even before the leader has declared it."""
    if worker.status in LIVE_STATUSES and worker.last_seen_at < now - timeout():
        return WorkerStatus.DEAD
    return WorkerStatus(worker.status)


def load_workers(now: datetime) -> list[WorkerRecord]:
    """Newest first, dead ones for DEAD_ROWS_KEPT after their last heartbeat; two queries."""
    workers = list(
        Worker.objects.filter(last_seen_at__gte=now - DEAD_ROWS_KEPT).order_by("-started_at", "-id")
    )
    running: dict[str, list[str]] = {worker.id: [] for worker in workers}
    held = Execution.objects.running().filter(owner__in=list(running)).order_by("id")
    for owner, execution_id in held.values_list("owner", "id"):
        running[str(owner)].append(str(execution_id))
    return [_record(worker, running[worker.id], now) for worker in workers]


def _record(worker: Worker, running: list[str], now: datetime) -> WorkerRecord:
    return WorkerRecord(
        id=worker.id,
        host=worker.host,
        pid=worker.pid,
        threads=worker.threads,
        status=effective_status(worker, now),
        started_at=worker.started_at,
        last_seen_at=worker.last_seen_at,
        stopped_at=worker.stopped_at,
        running=running,
    )


class WorkerOut(CamelSchema):
    id: str = Field(description='"host:pid:random"; a restarted process gets a new one.')
    host: str
    pid: int
    threads: int = Field(description="0 for a process that runs executions in-process (.run()).")
    started_at: UtcTime
    last_seen_at: UtcTime = Field(description="Its last heartbeat, by the database's clock.")
    status: WorkerStatus = Field(
        description="dead once silent for PLOY_WORKER_TIMEOUT_SECONDS; kept an hour."
    )
    running: list[str] = Field(description="The ids of the executions it holds now.")


@router.get(
    "/workers",
    operation_id="listWorkers",
    response={200: list[WorkerOut], 401: ErrorOut},
    tags=["workers"],
)
def list_workers(request: HttpRequest) -> list[WorkerOut]:
    """Every worker process, newest first: live ones, and dead ones for an hour."""
    return [WorkerOut.model_validate(record) for record in load_workers(clock.now())]
