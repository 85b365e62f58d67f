"""Live progress as server-sent events, read from the job row (the truth), never from the worker.

Events: `job` (the job whenever it changed), `metric` (one per validated epoch, id `epoch-N`), and
`end` once the job is finished. A client that reconnects with `Last-Event-ID: epoch-N` gets only
later epochs. FastAPI adds keep-alive comments while nothing happens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import select

from squeezer.api.deps import OwnedJob
from squeezer.api.errors import problems
from squeezer.api.schemas import JobRead, MetricRead
from squeezer.db import Job, JobMetric

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
POLL_S = 0.5


def _last_epoch(last_event_id: str | None) -> int:
    if last_event_id and last_event_id.startswith("epoch-") and last_event_id[6:].isdigit():
        return int(last_event_id[6:])
    return -1


@router.get("/{job_id}/events", response_class=EventSourceResponse, operation_id="jobs_events", responses=problems(404))
async def job_events(
    job_id: str,
    request: Request,
    _: OwnedJob,  # 404 before the stream starts
    last_event_id: Annotated[str | None, Header()] = None,
) -> AsyncIterator[ServerSentEvent]:
    sessions = request.app.state.sessions
    after = _last_epoch(last_event_id)

    def read(after_epoch: int) -> tuple[JobRead | None, list[MetricRead]]:
        with sessions() as s:
            job = s.get(Job, job_id)
            rows = s.scalars(
                select(JobMetric)
                .where(JobMetric.job_id == job_id, JobMetric.epoch > after_epoch)
                .order_by(JobMetric.epoch)
            ).all()
            return (JobRead.model_validate(job) if job else None), [MetricRead.model_validate(r) for r in rows]

    previous: JobRead | None = None
    while True:
        job, metrics = await anyio.to_thread.run_sync(read, after)
        for m in metrics:
            yield ServerSentEvent(event="metric", id=f"epoch-{m.epoch}", data=m)
            after = m.epoch
        if job is None:  # deleted while watched
            yield ServerSentEvent(event="end", data={"status": "deleted"})
            return
        if job != previous:
            yield ServerSentEvent(event="job", data=job)
            previous = job
        if job.status.is_terminal:
            yield ServerSentEvent(event="end", data={"status": job.status})
            return
        await anyio.sleep(POLL_S)
