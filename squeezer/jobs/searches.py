"""A search's life in the service: its candidates are ordinary jobs, and everything about the search
is read from their rows.

So a search needs no scheduler of its own, and nothing can leave it half-updated: the candidates run
on whichever workers take them (in parallel, with the jobs' confinement, recovery and resume), the
search's state and Pareto front are computed from the candidate rows when asked for, and the one
decision a search makes while it runs (stop a candidate early: successive halving, or the wall-time
budget) is taken by the worker that records the candidate's epoch, as an ordinary cancel with a reason.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from squeezer.db import Export, Job, JobMetric, Search
from squeezer.jobs import transitions
from squeezer.jobs.status import ACTIVE, JobStatus
from squeezer.jobs.times import as_utc
from squeezer.search import CandidateOutcome, SearchResult, SearchSettings, pareto_front
from squeezer.search.front import common_latency_scale, recommendation
from squeezer.search.result import SearchStatus, compression_algorithms
from squeezer.search.spec import DEADLINE_REASON

logger = logging.getLogger(__name__)


def settings_of(search: Search) -> SearchSettings:
    return SearchSettings.model_validate(search.spec["settings"])


def status_of(search: Search) -> SearchStatus:
    """queued / running while a candidate is; then cancelled (by the user), succeeded (a candidate
    finished) or failed (none did)."""
    states = {job.status for job in search.candidates}
    if states & ACTIVE:
        return "running" if states - {JobStatus.queued} else "queued"
    if search.cancelled_at is not None:
        return "cancelled"
    return "succeeded" if JobStatus.succeeded in states else "failed"


def finished_at(search: Search) -> datetime | None:
    if not search.candidates or any(job.status in ACTIVE for job in search.candidates):
        return None
    ends = [job.finished_at for job in search.candidates if job.finished_at is not None]
    return max(ends) if ends else search.cancelled_at


# ------------------------------------------------------------------------------------- the result


def _outcome(job: Job, onnx: Export | None, settings: SearchSettings) -> CandidateOutcome:
    result = job.result or {}
    timing = (result.get("latency") or {}).get(settings.runtime) or {}
    fp32 = result.get("uncompressed_metric")
    metric = result.get("metric", job.current_metric)
    status: Any = job.status.value
    if job.status == JobStatus.cancelled and job.stopped_reason:
        status = "stopped"
    wall = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
    return CandidateOutcome(
        name=job.candidate or job.name,
        status=status,
        job_id=job.id,
        metric=metric,
        within_budget=(metric >= settings.accuracy.floor(fp32) - 1e-9)
        if metric is not None and fp32 is not None
        else None,
        measured_latency_ms=timing.get("compressed_ms"),
        measured_fp32_latency_ms=timing.get("fp32_ms"),
        measured_speedup=timing.get("paired_speedup"),
        measured_speedup_spread=timing.get("paired_speedup_spread"),
        size_bytes=onnx.size_bytes if onnx is not None and job.status == JobStatus.succeeded else None,
        compression_rate=result.get("compression_rate", job.compression_rate),
        algorithms=compression_algorithms((job.spec or {}).get("config") or {}),
        epochs=job.epoch,
        wall_time_s=wall,
        stopped_reason=job.stopped_reason,
        error=job.error,
    )


def search_result(session: Session, search: Search) -> SearchResult:
    """Every candidate's outcome, the front and the recommendation, from the rows as they are now."""
    settings = settings_of(search)
    jobs = list(search.candidates)
    onnx = {
        e.job_id: e
        for e in session.scalars(select(Export).where(Export.job_id.in_([j.id for j in jobs]), Export.kind == "onnx"))
    }
    outcomes = [_outcome(job, onnx.get(job.id), settings) for job in jobs]
    common_latency_scale(outcomes)
    front = pareto_front(outcomes, settings.objective)
    for outcome in outcomes:
        outcome.on_front = outcome.name in front
    fp32s = [(j.result or {}).get("uncompressed_metric") for j in jobs]  # the same for every candidate
    fp32 = next((m for m in fp32s if m is not None), None)
    end = finished_at(search) or datetime.now(UTC)
    advice = recommendation(outcomes, settings.objective, settings.runtime)
    return SearchResult(
        objective=settings.objective,
        runtime=settings.runtime,
        batch_size=settings.batch_size,
        fp32_metric=fp32,
        metric_floor=settings.accuracy.floor(fp32) if fp32 is not None else None,
        candidates=outcomes,
        front=front,
        recommended=advice.name,
        keep_fp32=advice.keep_fp32,
        recommendation_note=advice.note,
        epochs_spent=sum(job.epoch for job in jobs),
        wall_time_s=(as_utc(end) - as_utc(search.created_at)).total_seconds(),
    )


# ------------------------------------------------------------------------------- while it runs


def stop_candidate(session: Session, job_id: str, reason: str) -> bool:
    """End a candidate early: the reason first, then an ordinary cancel (a queued one at once, a running
    one within its worker's poll, keeping its last finished epoch). False when it had already finished."""
    session.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE)).values(stopped_reason=reason))
    session.commit()
    return transitions.cancel(session, job_id) is not None


def judge_epoch(session: Session, job_id: str, epoch: int) -> str | None:
    """After a candidate recorded `epoch`: stop it if the search says so (its wall-time budget is spent,
    or successive halving ranks it out) and, past the deadline, every sibling still queued. The reason
    it was stopped, or None (and None for a job that is no candidate)."""
    job = session.get(Job, job_id)
    if job is None or job.search_id is None:
        return None
    search = session.get(Search, job.search_id)
    if search is None or search.cancelled_at is not None:
        return None
    settings = settings_of(search)
    past_deadline = search.deadline_at is not None and datetime.now(UTC) >= as_utc(search.deadline_at)
    if past_deadline:  # the siblings that have not started never will
        for sibling in search.candidates:
            if sibling.status == JobStatus.queued:
                stop_candidate(session, sibling.id, DEADLINE_REASON)
    margins: dict[str, float] = {}
    rates: dict[str, float | None] = {}
    if not past_deadline and settings.early_stopping and settings.halving().judges(epoch):  # else no rows needed
        rows = session.execute(
            select(Job.candidate, JobMetric.accuracy_budget, JobMetric.compression_rate)
            .join(JobMetric, JobMetric.job_id == Job.id)
            .where(Job.search_id == search.id, JobMetric.epoch == epoch)
        ).all()
        margins = {str(name): float(margin) for name, margin, _ in rows}
        rates = {str(name): rate for name, _, rate in rows}
    previous = _margin_at(session, job_id, epoch - 1) if job.candidate in margins else None
    reason = settings.stop_reason(str(job.candidate), epoch, margins, rates, previous, past_deadline)
    if reason is not None and stop_candidate(session, job_id, reason):
        logger.info("search %s: candidate %s stopped: %s", search.id, job.candidate, reason)
        return reason
    return None


def _margin_at(session: Session, job_id: str, epoch: int) -> float | None:
    """The job's accuracy margin at `epoch` (None: that epoch is not recorded)."""
    margin = session.scalar(
        select(JobMetric.accuracy_budget).where(JobMetric.job_id == job_id, JobMetric.epoch == epoch)
    )
    return None if margin is None else float(margin)


def cancel_search(session: Session, search: Search) -> None:
    """The search and every candidate not finished (cancelled as jobs are: queued at once, running after
    the epoch); finished candidates and their exports stay."""
    session.execute(
        update(Search)
        .where(Search.id == search.id, Search.cancelled_at.is_(None))
        .values(cancelled_at=datetime.now(UTC))
    )
    session.commit()
    for job in list(search.candidates):
        if job.status in ACTIVE:
            transitions.cancel(session, job.id)
    session.expire_all()
