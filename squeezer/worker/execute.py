"""Run one job row: claim it, run it, and record everything in the database as it happens.

`execute_job(job_id, ...)` is what the Celery task calls; it holds the logic so it can be tested
without a broker. The row is the truth, and every change to it is a conditional transition
(`squeezer.jobs.transitions`) on this worker's claim: a duplicate delivery finds the row taken and
does nothing, cancellation is read from the row every poll by the job's watch (`supervision.py`) and
after every epoch, every epoch's record becomes a
`job_metric` row as soon as it exists, and a job that is no longer ours (requeued by the sweep,
deleted) is stopped without writing anything. A worker that is stopping (Ctrl-C, SIGTERM, `docker
compose stop`) stops its job process and puts the job back on the queue, to resume from its last
completed epoch.

The job itself runs in a job process (`sandbox/`) that holds the upload but no credentials: this
process relays its epochs to the database and copies its outputs to the store.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from squeezer.db import Artifact, Export, Job, JobStatus, Search
from squeezer.jobs import searches, transitions
from squeezer.jobs.exports import EXPORTS
from squeezer.jobs.result import JobResult
from squeezer.jobs.spec import JOB_INPUTS
from squeezer.jobs.times import as_utc
from squeezer.storage import LocalStore
from squeezer.worker.failures import failure_reason
from squeezer.worker.limits import JobLimits
from squeezer.worker.sandbox.confine import SandboxUnavailable, require_landlock
from squeezer.worker.sandbox.process import (
    JobInterrupted,
    JobProcessFailed,
    JobRun,
    run_job_process,
    stop_requested,
)
from squeezer.worker.sandbox.protocol import DoneMessage, EpochMessage, JobRequest
from squeezer.worker.supervision import JobWatch

RUN_JOB = "squeezer.worker.runner:run_job"
LOOP_STATE = "loop_state.pt"  # what a training job saves after every epoch (runner.py)
KEEP_OUTPUTS_S = 600.0  # the time a stopped job gets to export what its last epoch saved

logger = logging.getLogger(__name__)


def _epoch_refused(epoch: int, previous: int | None, total: int | None) -> str | None:
    """Why an epoch message is refused. A job reports each epoch once, in order: 0 (the metric before training,
    or a post-training job's one record) up to the job's `total_epochs` (the recipe's epochs, or an
    accuracy-aware loop's maximal_total_epochs); every other message would be one more metric row. A resumed
    job may repeat the epoch its last run was in, so the order is the run's."""
    if total is not None and epoch > total:
        return f"the job process reported epoch {epoch}, past the job's total_epochs of {total}; it was stopped"
    if previous is not None and epoch <= previous:
        return (
            f"the job process reported epoch {epoch} after epoch {previous} (each epoch once, in order); it was stopped"
        )
    return None


def _record_epoch(
    sessions: sessionmaker[Session], job_id: str, owner: str, run: JobRun, total: int | None
) -> Callable[[EpochMessage], None]:
    previous: int | None = None

    def record(message: EpochMessage) -> None:
        nonlocal previous
        if (refusal := _epoch_refused(message.epoch, previous, total)) is not None:
            raise JobProcessFailed(refusal)  # the job process is killed, and the job fails with this reason
        previous = message.epoch
        r = message.model_dump()
        with sessions() as session:
            if not transitions.record_epoch(session, job_id, owner, r["epoch"], r):
                logger.warning("job %s is no longer this worker's (requeued or deleted); stopping it", job_id)
                run.interrupt("lost")
                return
            try:  # a search's candidate may be stopped here (a cancel, read after the epoch like any other)
                searches.judge_epoch(session, job_id, r["epoch"])
            except Exception:  # the search's judgement is advice: the candidate itself goes on
                logger.exception("job %s: the search could not judge epoch %d", job_id, r["epoch"])
        logger.info("job %s epoch %d: metric %.4f", job_id, r["epoch"], r["metric"])

    return record


def _finish(sessions: sessionmaker[Session], job_id: str, owner: str, status: JobStatus, **values: Any) -> str:
    with sessions() as session:
        if not transitions.finish(session, job_id, owner, status, **values):
            logger.warning("job %s ended %s, but it is no longer this worker's; not recorded", job_id, status.value)
            return "lost"
    return status.value


def _requeue(
    sessions: sessionmaker[Session], job_id: str, owner: str, enqueue: Callable[[str, int], None] | None
) -> str:
    """The worker is stopping: the job goes back to the queue (or ends cancelled, if it was being cancelled)."""
    with sessions() as session:
        status = transitions.requeue_stopped(session, job_id, owner)
        priority = session.scalar(select(Job.priority).where(Job.id == job_id))
    if status is None:
        return "lost"
    logger.warning("job %s stopped with its worker; %s", job_id, status.value)
    if status == JobStatus.queued and enqueue is not None and priority is not None:
        _send_again(sessions, job_id, priority, enqueue)
    return "requeued" if status == JobStatus.queued else status.value


def _store_exports(
    sessions: sessionmaker[Session], store: LocalStore, job_id: str, workdir: Path, kinds: Sequence[str]
) -> None:
    """Copy the job process's outputs to the store: by kind, from fixed names, never through a link."""
    with sessions() as session:
        for kind in kinds:
            source = workdir / EXPORTS[kind].filename
            if source.is_symlink() or not source.is_file():
                continue
            stored = store.save_file(f"jobs/{job_id}/{EXPORTS[kind].filename}", source)
            row = session.scalars(select(Export).where(Export.job_id == job_id, Export.kind == kind)).first()
            if row is None:  # a re-run job replaces its exports
                row = Export(job_id=job_id, kind=kind)
                session.add(row)
            row.storage_path, row.size_bytes, row.sha256 = stored.key, stored.size_bytes, stored.sha256
        session.commit()


def _hand_back(sessions: sessionmaker[Session], job_id: str, enqueue: Callable[[str, int], None] | None) -> str:
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.queued or enqueue is None:
            return "skipped"
        priority = job.priority
    _send_again(sessions, job_id, priority, enqueue)
    return "skipped"


def _send_again(
    sessions: sessionmaker[Session], job_id: str, priority: int, enqueue: Callable[[str, int], None]
) -> None:
    try:
        enqueue(job_id, priority)
        with sessions() as session:
            transitions.mark_enqueued(session, job_id)
    except Exception:  # no broker now: the sweep sends it (a requeued job's message counts as never sent)
        logger.warning("could not send job %s again; the sweep will", job_id, exc_info=True)


def _stopped(
    sessions: sessionmaker[Session],
    store: LocalStore,
    job_id: str,
    owner: str,
    request: JobRequest,
    reason: str,
    verdict: str,
    spec: dict[str, Any],
) -> str:
    """The watch stopped the job process mid-epoch: keep what the last finished epoch saved, by running the
    job once more in `stopped` mode (it trains nothing: it exports the saved loop state), then record it
    as `cancelled` (a cancel), or `failed` with the verdict (a deadline, a resource limit)."""
    done = None
    workdir = Path(request.workdir)
    if reason != "limit" and spec["recipe"].get("mode", "train") == "train" and (workdir / LOOP_STATE).exists():
        keep = request.model_copy(update={"arguments": {**request.arguments, "stopped": reason}})
        run = JobRun()
        limits = JobLimits(**{**request.limits, "wall_time_s": KEEP_OUTPUTS_S}) if request.limits else None
        until = datetime.now(UTC) + timedelta(seconds=KEEP_OUTPUTS_S)
        try:
            with JobWatch(sessions, job_id, owner, run, workdir, limits, until, None, 10.0, 1.0, watch_cancel=False):
                done = run_job_process(keep, lambda _: None, lambda: False, run)
        except (JobProcessFailed, JobInterrupted) as exc:
            logger.error("job %s: keeping the outputs of its last epoch failed: %s", job_id, exc)
    if not _still_ours(sessions, job_id, owner):
        return "lost"
    kinds = done.outputs if done is not None else []
    with contextlib.suppress(OSError):
        _store_exports(sessions, store, job_id, workdir, [*kinds, "log"])
    result = _result(done) if done is not None else None
    if reason == "cancelled":
        outcome = _finish(sessions, job_id, owner, JobStatus.cancelled, result=result)
    else:
        kept = f"; {done.warnings[-1]}" if done is not None and done.warnings else ""
        outcome = _finish(sessions, job_id, owner, JobStatus.failed, error=verdict + kept, result=result)
    if outcome != "lost":
        shutil.rmtree(workdir, ignore_errors=True)
    return outcome


def _result(done: DoneMessage) -> dict[str, Any]:
    """The row's `result`: a `JobResult` as JSON (the API reads it back as one)."""
    return JobResult.model_validate(done.model_dump(include=set(JobResult.model_fields))).model_dump()


def _still_ours(sessions: sessionmaker[Session], job_id: str, owner: str) -> bool:
    with sessions() as session:
        return transitions.heartbeat(session, job_id, owner)


def execute_job(
    job_id: str,
    sessions: sessionmaker[Session],
    store: LocalStore,
    work_root: str | Path,
    heartbeat_s: float = 10.0,
    sandbox: str = "landlock",
    target: str = RUN_JOB,
    import_paths: Sequence[str] = (),
    enqueue: Callable[[str, int], None] | None = None,
    limits: JobLimits | None = None,
    poll_s: float = 1.0,
    accept_weaker_sandbox: bool = False,
) -> str:
    """Run job `job_id` if it can be claimed; returns its final status, or 'skipped' (not claimed, or
    the worker is stopping), 'requeued' (stopped with the worker), 'lost' (no longer this worker's).

    The job runs in its own process (`sandbox/`): confined with Landlock (`sandbox="landlock"`), or
    only without credentials (`"process"`). `target` is what that process calls (tests substitute
    a hostile loader for `run_job`, and `import_paths` to find it). `work_root` must be shared by
    the workers that may resume each other's jobs (it is `<home>/work`): the loop state saved there
    after every epoch is where a requeued job continues. `enqueue` sends a job stopped with its
    worker again (without it, the sweep does, after `requeue_after_s`). `limits` bound the job process
    (`limits.py`; the Celery task passes the settings'; None: no resource limits, only the recipe's
    wall time), checked with cancel and the deadline every `poll_s` (`supervision.py`).
    """
    if stop_requested():  # the worker is stopping: the job stays queued, its message goes back for the next
        return _hand_back(sessions, job_id, enqueue)
    owner = transitions.new_owner()
    with sessions() as session:
        if not transitions.claim(session, job_id, owner):
            logger.info("job %s was not queued (already taken or cancelled); skipping", job_id)
            return "skipped"
        claimed = _read_claimed(session, store, job_id)
    if isinstance(claimed, str):  # an input is gone: fail the job rather than leave it running
        return _finish(sessions, job_id, owner, JobStatus.failed, error=claimed)
    spec = claimed.spec
    workdir = Path(work_root).resolve() / job_id
    own_time = spec["recipe"].get("max_wall_time_s")
    limits = limits.with_wall_time(own_time) if limits is not None else None
    wall = limits.wall_time_s if limits is not None else own_time
    deadline = datetime.now(UTC) + timedelta(seconds=wall) if wall else None
    request = _job_request(claimed, workdir, target, sandbox, import_paths, limits)
    run = JobRun()
    watch = JobWatch(
        sessions, job_id, owner, run, workdir, limits, deadline, claimed.search_deadline, heartbeat_s, poll_s
    )
    try:
        if request.confine:
            require_landlock(accept_weaker_sandbox)
        with watch:
            done = run_job_process(
                request,
                _record_epoch(sessions, job_id, owner, run, claimed.total_epochs),
                watch.cancel_after_epoch,
                run,
            )
    except JobInterrupted as exc:
        if exc.reason == "stopping":
            return _requeue(sessions, job_id, owner, enqueue)
        if exc.reason in ("cancelled", "deadline", "limit"):
            return _stopped(sessions, store, job_id, owner, request, exc.reason, watch.verdict or exc.reason, spec)
        logger.warning("job %s: %s", job_id, exc)
        return "lost"
    except (JobProcessFailed, SandboxUnavailable) as exc:
        if not (isinstance(exc, JobProcessFailed) and exc.input_error):
            logger.error("job %s failed: %s", job_id, exc)
        if not _still_ours(sessions, job_id, owner):
            return "lost"
        with contextlib.suppress(OSError):  # a full disk must not keep the failure from being recorded
            _store_exports(sessions, store, job_id, workdir, ["log"])
        return _finish(sessions, job_id, owner, JobStatus.failed, error=str(exc))
    return _record_done(sessions, store, job_id, owner, workdir, done)


@dataclass(frozen=True)
class _Claimed:
    """What the worker reads of a job it claimed: its spec, epochs, input files and its search's deadline."""

    spec: dict[str, Any]
    total_epochs: int | None
    paths: dict[str, str]
    search_deadline: datetime | None


def _read_claimed(session: Session, store: LocalStore, job_id: str) -> _Claimed | str:
    """The claimed job's inputs, or why it cannot run (an artifact deleted under it: the API's submit lock
    should make this impossible, but a job left `running` forever would be worse than a failed one)."""
    job = session.get(Job, job_id)
    if job is None:
        return "the job row disappeared after it was claimed"
    spec = dict(job.spec)
    search = session.get(Search, job.search_id) if job.search_id is not None else None
    search_deadline = as_utc(search.deadline_at) if search is not None and search.deadline_at else None
    paths = {}
    for field in JOB_INPUTS:
        if spec.get(field) is None:  # a post-training job may have no val_data
            continue
        artifact = session.get(Artifact, spec[field])
        if artifact is None:
            return f"its {field} (artifact {spec[field]}) was deleted before the job ran"
        paths[field] = str(store.path(artifact.storage_path))
    return _Claimed(spec, job.total_epochs, paths, search_deadline)


def _job_request(
    claimed: _Claimed,
    workdir: Path,
    target: str,
    sandbox: str,
    import_paths: Sequence[str],
    limits: JobLimits | None,
) -> JobRequest:
    spec, paths = claimed.spec, claimed.paths
    return JobRequest(
        target=target,
        arguments={
            "model_path": paths["model"],
            "config": spec["config"],
            "train_path": paths["train_data"],
            "val_path": paths.get("val_data"),
            "recipe": spec["recipe"],
            "workdir": str(workdir),
            **({"latency_batch_size": spec["latency_batch_size"]} if "latency_batch_size" in spec else {}),
        },
        readable=list(paths.values()),
        workdir=str(workdir),
        confine=sandbox == "landlock",
        import_paths=list(import_paths),
        limits=limits.to_dict() if limits is not None else None,
    )


def _record_done(
    sessions: sessionmaker[Session], store: LocalStore, job_id: str, owner: str, workdir: Path, done: DoneMessage
) -> str:
    """The job process finished: its exports into the store, then its row (while the job is still ours)."""
    if not _still_ours(sessions, job_id, owner):  # its exports are the new owner's to write
        logger.warning("job %s finished, but it is no longer this worker's; not recorded", job_id)
        return "lost"
    try:
        _store_exports(sessions, store, job_id, workdir, done.outputs)
    except OSError as exc:
        return _finish(sessions, job_id, owner, JobStatus.failed, error=failure_reason(exc))
    error = {"error": done.error} if done.error else {}
    outcome = _finish(sessions, job_id, owner, JobStatus(done.status), **error, result=_result(done))
    if outcome != "lost":
        shutil.rmtree(workdir, ignore_errors=True)  # everything worth keeping is in the store now
    return outcome
