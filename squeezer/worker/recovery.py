"""Jobs whose worker died: found by their heartbeat, queued again to resume, or failed after N attempts.

A worker refreshes `job.heartbeat_at` while it runs a job (`Heartbeat`). `recover_stale_jobs` (run
periodically by the API, and by `squeezer recover`) looks for running jobs whose heartbeat is older
than `stale_after_s`: each goes back to `queued` and to the queue, and the next worker resumes it from
the loop state its predecessor saved after the last completed epoch; after `max_attempts` claims it
ends `failed` with the reason. Every change is a conditional UPDATE on the stale heartbeat, so two
sweeps, or a sweep racing a late heartbeat, cannot both act on one job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from squeezer.db import Job, JobStatus

logger = logging.getLogger(__name__)


class Heartbeat:
    """A daemon thread that stamps the job row every `interval_s` while the job runs."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, interval_s: float) -> None:
        self.sessions, self.job_id, self.interval_s = sessions, job_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self.sessions() as session:
                    session.execute(
                        update(Job)
                        .where(Job.id == self.job_id, Job.status.in_([JobStatus.running, JobStatus.cancelling]))
                        .values(heartbeat_at=datetime.now(UTC))
                    )
                    session.commit()
            except Exception:  # a missed beat is not fatal; a dead database shows up elsewhere
                logger.warning("heartbeat of job %s failed", self.job_id, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def recover_stale_jobs(
    sessions: sessionmaker[Session],
    enqueue: Callable[[str, int], None],
    stale_after_s: float,
    max_attempts: int,
) -> dict[str, list[str]]:
    """Requeue (or fail, or finish cancelling) jobs whose worker stopped beating; returns what it did."""
    cutoff = datetime.now(UTC) - timedelta(seconds=stale_after_s)
    done: dict[str, list[str]] = {"requeued": [], "failed": [], "cancelled": []}
    with sessions() as session:
        stale = session.execute(
            select(Job.id, Job.status, Job.attempts, Job.priority, Job.heartbeat_at).where(
                Job.status.in_([JobStatus.running, JobStatus.cancelling]), Job.heartbeat_at < cutoff
            )
        ).all()
        for job_id, status, attempts, priority, beat in stale:
            if status == JobStatus.cancelling:
                values: dict[str, Any] = {"status": JobStatus.cancelled, "finished_at": datetime.now(UTC)}
                outcome = "cancelled"
            elif attempts >= max_attempts:
                values = {
                    "status": JobStatus.failed,
                    "finished_at": datetime.now(UTC),
                    "error": f"the worker stopped (no heartbeat for {stale_after_s:.0f} s) in each of "
                    f"{attempts} attempts; giving up after {max_attempts}",
                }
                outcome = "failed"
            else:
                values = {"status": JobStatus.queued, "worker_id": None}
                outcome = "requeued"
            result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(Job).where(Job.id == job_id, Job.status == status, Job.heartbeat_at == beat).values(**values)
            )
            session.commit()
            if result.rowcount:
                done[outcome].append(job_id)
                if outcome == "requeued":
                    enqueue(job_id, priority)
                logger.warning("job %s: worker lost during attempt %d; %s", job_id, attempts, outcome)
    return done
