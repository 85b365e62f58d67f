"""Every change of a job's state, in one place, each one a conditional UPDATE.

The job row is the truth, and several processes change it: the API (cancel, delete), workers
(claim, progress, finish, requeue when stopped) and the stale-job sweep. Each transition names the
state it expects and, when a worker makes it, the claim that worker holds (`owner`, the `worker_id`
it wrote); when the row is no longer so, it changes nothing and says so. So two writers can never both
act on one job: a cancel that arrives after a success finds the job finished, a claim and a cancel
of a queued job cannot both win, and a worker whose job was requeued by the sweep (or deleted) can
no longer write to it and stops its job process.

    queued ──claim──> running ──finish──> succeeded | cancelled | failed
      │  ^               │  │
      │  └──requeue──────┘  └──cancel──> cancelling ──finish──> cancelled | succeeded | failed
      │   (worker stopping,                  │
      │    or stale: sweep)                  └──requeue / sweep──> cancelled
      └──cancel──> cancelled                        (a stale running job: queued, or failed after max_attempts)

A stopped worker's requeue does not count the attempt (the job did nothing wrong); the sweep's
does, so a job that keeps killing its worker ends `failed` after `max_attempts` claims.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, Update, case, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from squeezer.db import Job, JobMetric
from squeezer.jobs.status import TERMINAL, JobStatus

logger = logging.getLogger(__name__)

RUNNING = (JobStatus.running, JobStatus.cancelling)  # a worker holds the job
EPOCH_FIELDS = (
    "phase",
    "stage",
    "metric",
    "accuracy_budget",
    "compression_rate",
    "compression_rate_target",
    "loss",
    "lr",
    "wall_time_s",
)


def new_owner() -> str:
    """The claimant's name: host and pid. A worker process runs one job at a time on its main thread, so
    no two live claims share it; a job run on another thread (tests, tools) adds the thread's id."""
    thread = "" if threading.current_thread() is threading.main_thread() else f":{threading.get_ident()}"
    return f"{socket.gethostname()}:{os.getpid()}{thread}"


def _apply(session: Session, statement: Update) -> bool:
    result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    session.commit()
    return bool(result.rowcount)


def _owned(job_id: str, owner: str) -> Update:
    return update(Job).where(Job.id == job_id, Job.worker_id == owner, Job.status.in_(RUNNING))


# ----------------------------------------------------------------------------------------- workers


def claim(session: Session, job_id: str, owner: str) -> bool:
    """queued -> running for `owner`; False when another delivery (or a cancel) got there first."""
    now = datetime.now(UTC)
    return _apply(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued)
        .values(
            status=JobStatus.running,
            attempts=Job.attempts + 1,
            worker_id=owner,
            started_at=now,
            heartbeat_at=now,
        ),
    )


def heartbeat(session: Session, job_id: str, owner: str) -> bool:
    """Stamp the job as alive; False when it is no longer `owner`'s (requeued, finished or deleted)."""
    return _apply(session, _owned(job_id, owner).values(heartbeat_at=datetime.now(UTC)))


def record_epoch(session: Session, job_id: str, owner: str, epoch: int, record: dict[str, Any]) -> bool:
    """One validated epoch: the job's progress and its `job_metric` row, in one transaction, while the
    job is `owner`'s; False (and nothing written) when it is not. A resumed job repeats the epoch it
    was in: its row is updated, never duplicated."""
    metric = record["metric"]
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        _owned(job_id, owner).values(
            epoch=epoch,
            stage=record["stage"],
            current_metric=metric,
            best_metric=case((or_(Job.best_metric.is_(None), Job.best_metric < metric), metric), else_=Job.best_metric),
            compression_rate=record["compression_rate"],
            accuracy_budget=record["accuracy_budget"],
            heartbeat_at=datetime.now(UTC),
        )
    )
    if not result.rowcount:
        session.rollback()
        return False
    values = {k: record[k] for k in EPOCH_FIELDS}
    row = session.scalars(select(JobMetric).where(JobMetric.job_id == job_id, JobMetric.epoch == epoch)).first()
    if row is None:
        session.add(JobMetric(job_id=job_id, epoch=epoch, **values))
    else:
        for key, value in values.items():
            setattr(row, key, value)
    session.commit()
    return True


def finish(session: Session, job_id: str, owner: str, status: JobStatus, **values: Any) -> bool:
    """running or cancelling -> `status` (succeeded, cancelled, failed) while the job is `owner`'s.

    A job that succeeded while a cancel was arriving (`cancelling`) is `succeeded`: its exports exist.
    """
    assert status in TERMINAL, status
    return _apply(session, _owned(job_id, owner).values(status=status, finished_at=datetime.now(UTC), **values))


def fail(session: Session, job_id: str, owner: str, error: str) -> bool:
    return finish(session, job_id, owner, JobStatus.failed, error=error)


def requeue_stopped(session: Session, job_id: str, owner: str) -> JobStatus | None:
    """The worker is stopping and has stopped the job's process: running -> queued, without counting
    the attempt, to be resumed from its last completed epoch; a job being cancelled becomes
    `cancelled`. The new state, or None when the job was no longer `owner`'s."""
    requeued = _apply(
        session,
        _owned(job_id, owner)
        .where(Job.status == JobStatus.running)
        .values(status=JobStatus.queued, worker_id=None, attempts=Job.attempts - 1, enqueued_at=None),
    )
    if requeued:
        return JobStatus.queued
    cancelled = _apply(
        session,
        _owned(job_id, owner)
        .where(Job.status == JobStatus.cancelling)
        .values(status=JobStatus.cancelled, finished_at=datetime.now(UTC)),
    )
    return JobStatus.cancelled if cancelled else None


def mark_enqueued(session: Session, job_id: str) -> bool:
    """The queued job's message was sent now (the sweep sends again those sent long ago, or never)."""
    queued = update(Job).where(Job.id == job_id, Job.status == JobStatus.queued)
    return _apply(session, queued.values(enqueued_at=datetime.now(UTC)))


# --------------------------------------------------------------------------------------------- API


def cancel(session: Session, job_id: str) -> JobStatus | None:
    """queued -> cancelled (at once), running -> cancelling (the worker's watch stops the job process within
    a poll, and records `cancelled` with the outputs of the last finished epoch).

    The new state (`cancelling` again for a job already being cancelled), or None when the job's state
    allows no cancel: it finished, or is gone.
    """
    while True:  # each turn that changes nothing saw the job move (claimed, requeued) in between
        if _apply(
            session,
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.queued)
            .values(status=JobStatus.cancelled, finished_at=datetime.now(UTC)),
        ):
            return JobStatus.cancelled
        if _apply(
            session,
            update(Job).where(Job.id == job_id, Job.status == JobStatus.running).values(status=JobStatus.cancelling),
        ):
            return JobStatus.cancelling
        status = session.scalar(select(Job.status).where(Job.id == job_id))
        session.commit()
        if status is None or status in TERMINAL:
            return None
        if status == JobStatus.cancelling:
            return status


def settle_for_delete(session: Session, job_id: str) -> bool:
    """Make the job safe to delete: a queued one is cancelled first, so that no worker claims it while
    it goes. True when it is finished (and so stays); False when a worker holds it."""
    while True:
        if _apply(
            session,
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.queued)
            .values(status=JobStatus.cancelled, finished_at=datetime.now(UTC)),
        ):
            return True
        status = session.scalar(select(Job.status).where(Job.id == job_id))
        session.commit()
        if status is None or status in TERMINAL:
            return True
        if status in RUNNING:
            return False


def settle_search_for_delete(session: Session, search_id: str) -> bool:
    """`settle_for_delete` for all of a search's candidates at once, or for none: its queued candidates
    are cancelled by one statement that changes nothing while a worker holds any of them. True when no
    worker holds one (so all are finished now); False, with nothing changed, when one does."""
    held_job = aliased(Job)
    held = select(held_job.id).where(held_job.search_id == search_id, held_job.status.in_(RUNNING)).exists()
    # PostgreSQL: the candidates locked first, so no claim commits between the check and the cancel
    # (SQLite has no row locks, and runs the one UPDATE under its database write lock)
    session.execute(select(Job.id).where(Job.search_id == search_id).with_for_update())
    session.execute(
        update(Job)
        .where(Job.search_id == search_id, Job.status == JobStatus.queued, ~held)
        .values(status=JobStatus.cancelled, finished_at=datetime.now(UTC))
    )
    busy = bool(session.scalar(select(held)))
    session.commit()
    return not busy


# ------------------------------------------------------------------------------------------- sweep


def recover_stale_jobs(
    sessions: sessionmaker[Session],
    enqueue: Callable[[str, int], None],
    stale_after_s: float,
    max_attempts: int,
    requeue_after_s: float | None = None,
) -> dict[str, list[str]]:
    """The sweep (run periodically by the API, and by `squeezer recover`): a running job whose worker
    stopped beating goes back to `queued` and to the queue (the next worker resumes it from the loop
    state saved after the last completed epoch), or ends `failed` after `max_attempts` claims; a stale
    `cancelling` job ends `cancelled`. Queued jobs whose message was sent more than `requeue_after_s`
    ago (a broker that lost it, or was down at submit) are sent again. Every change is conditional on
    the state and heartbeat the sweep read, so two sweeps, or a sweep and a late heartbeat or finish
    from the old worker, cannot both act on one job; a requeue also clears the owner, so the old
    worker can no longer write to it. Returns what it did."""
    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=stale_after_s)
    done: dict[str, list[str]] = {"requeued": [], "failed": [], "cancelled": [], "resent": []}
    if requeue_after_s is not None:
        done["resent"] = _resend_queued(sessions, enqueue, now - timedelta(seconds=requeue_after_s))
    with sessions() as session:
        stale = session.execute(
            select(Job.id, Job.status, Job.attempts, Job.priority, Job.heartbeat_at).where(
                Job.status.in_(RUNNING), Job.heartbeat_at < cutoff
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
            if _apply(
                session,
                update(Job).where(Job.id == job_id, Job.status == status, Job.heartbeat_at == beat).values(**values),
            ):
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
            if _apply(
                session,
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.queued, same)
                .values(enqueued_at=datetime.now(UTC)),
            ):
                try:
                    enqueue(job_id, priority)
                    resent.append(job_id)
                except Exception:  # still no broker: the next sweep tries again
                    logger.warning("could not send job %s again", job_id, exc_info=True)
    return resent
