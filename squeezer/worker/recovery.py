"""Jobs whose worker died, or whose message was lost: found in the database, the truth, and sent again.

A worker refreshes `job.heartbeat_at` while it runs a job (`Heartbeat`). `recover_stale_jobs` (run
periodically by the API, and by `squeezer recover`) looks for running jobs whose heartbeat is older
than `stale_after_s`: each goes back to `queued` and to the queue, and the next worker resumes it from
the loop state its predecessor saved after the last completed epoch; after `max_attempts` claims it
ends `failed` with the reason. Queued jobs whose message was sent more than `requeue_after_s` ago (a
broker that restarted without its data, or was down at submit) are sent again; a duplicate message is
harmless, because a worker claims a job with a conditional UPDATE. Every change here is conditional on
the value the sweep read, so two sweeps, or a sweep racing a late heartbeat, cannot both act on one job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, or_, select, update
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
    requeue_after_s: float | None = None,
) -> dict[str, list[str]]:
    """Requeue (or fail, or finish cancelling) jobs whose worker stopped beating, and send again the
    messages of jobs queued for longer than `requeue_after_s`; returns what it did."""
    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=stale_after_s)
    done: dict[str, list[str]] = {"requeued": [], "failed": [], "cancelled": [], "resent": []}
    if requeue_after_s is not None:
        done["resent"] = _resend_queued(sessions, enqueue, now - timedelta(seconds=requeue_after_s))
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
                values = {"status": JobStatus.queued, "worker_id": None, "enqueued_at": datetime.now(UTC)}
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


def _resend_queued(sessions: sessionmaker[Session], enqueue: Callable[[str, int], None], cutoff: datetime) -> list[str]:
    resent = []
    with sessions() as session:
        waiting = session.execute(
            select(Job.id, Job.priority, Job.enqueued_at).where(
                Job.status == JobStatus.queued, or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff)
            )
        ).all()
        for job_id, priority, sent in waiting:
            same = Job.enqueued_at.is_(None) if sent is None else Job.enqueued_at == sent
            result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.queued, same)
                .values(enqueued_at=datetime.now(UTC))
            )
            session.commit()
            if result.rowcount:
                try:
                    enqueue(job_id, priority)
                    resent.append(job_id)
                except Exception:  # still no broker: the next sweep tries again
                    logger.warning("could not send job %s again", job_id, exc_info=True)
    return resent
