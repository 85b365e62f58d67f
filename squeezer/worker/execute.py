"""Run one job row: claim it, run it, and record everything in the database as it happens.

`execute_job(job_id, ...)` is what the Celery task calls; it holds the logic so it can be tested
without a broker. The row is the truth: claiming is one conditional UPDATE (a duplicate delivery
finds the row taken and does nothing), cancellation is read from the row after every epoch, and
every epoch's record becomes a `job_metric` row as soon as it exists.

The job itself runs in a job process (`sandbox/`) that holds the upload but no credentials: this
process relays its epochs to the database and copies its outputs to the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from squeezer.db import Artifact, Export, Job, JobMetric, JobStatus
from squeezer.db.models import EXPORT_FILENAMES
from squeezer.storage import LocalStore
from squeezer.worker.failures import failure_reason
from squeezer.worker.recovery import Heartbeat
from squeezer.worker.sandbox.confine import SandboxUnavailable, require_landlock
from squeezer.worker.sandbox.process import JobProcessFailed, run_job_process
from squeezer.worker.sandbox.protocol import EpochMessage, JobRequest

RUN_JOB = "squeezer.worker.runner:run_job"

logger = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(sessions: sessionmaker[Session], job_id: str) -> bool:
    """queued -> running in one conditional UPDATE; False if another delivery got there first."""
    with sessions() as session:
        result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.queued)
            .values(
                status=JobStatus.running,
                attempts=Job.attempts + 1,
                worker_id=worker_id(),
                started_at=datetime.now(UTC),
                heartbeat_at=datetime.now(UTC),
            )
        )
        session.commit()
        return bool(result.rowcount)


def _record_epoch(sessions: sessionmaker[Session], job_id: str) -> Callable[[EpochMessage], None]:
    def record(message: EpochMessage) -> None:
        r = message.model_dump()
        with sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            values = {
                k: r[k]
                for k in (
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
            }
            row = session.scalars(select(JobMetric).where(JobMetric.job_id == job_id, JobMetric.epoch == r["epoch"]))
            existing = row.first()
            if existing is None:  # a resumed job repeats an epoch: update, never duplicate
                session.add(JobMetric(job_id=job_id, epoch=r["epoch"], **values))
            else:
                for key, value in values.items():
                    setattr(existing, key, value)
            job.epoch, job.stage, job.current_metric = r["epoch"], r["stage"], r["metric"]
            job.best_metric = max(job.best_metric or r["metric"], r["metric"])
            job.compression_rate, job.accuracy_budget = r["compression_rate"], r["accuracy_budget"]
            job.heartbeat_at = datetime.now(UTC)
            session.commit()
        logger.info("job %s epoch %d: metric %.4f", job_id, r["epoch"], r["metric"])

    return record


def _cancel_requested(sessions: sessionmaker[Session], job_id: str) -> Callable[[], bool]:
    def ask() -> bool:
        with sessions() as session:
            job = session.get(Job, job_id)
            return job is None or job.status == JobStatus.cancelling

    return ask


def _finish(sessions: sessionmaker[Session], job_id: str, status: JobStatus, **values: Any) -> None:
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            return
        job.status = status
        job.finished_at = datetime.now(UTC)
        for key, value in values.items():
            setattr(job, key, value)
        session.commit()


def _store_exports(
    sessions: sessionmaker[Session], store: LocalStore, job_id: str, workdir: Path, kinds: Sequence[str]
) -> None:
    """Copy the job process's outputs to the store: by kind, from fixed names, never through a link."""
    with sessions() as session:
        for kind in kinds:
            source = workdir / EXPORT_FILENAMES[kind]
            if source.is_symlink() or not source.is_file():
                continue
            stored = store.save_file(f"jobs/{job_id}/{EXPORT_FILENAMES[kind]}", source)
            row = session.scalars(select(Export).where(Export.job_id == job_id, Export.kind == kind)).first()
            if row is None:  # a re-run job replaces its exports
                row = Export(job_id=job_id, kind=kind)
                session.add(row)
            row.storage_path, row.size_bytes, row.sha256 = stored.key, stored.size_bytes, stored.sha256
        session.commit()


def execute_job(
    job_id: str,
    sessions: sessionmaker[Session],
    store: LocalStore,
    work_root: str | Path,
    heartbeat_s: float = 10.0,
    sandbox: str = "landlock",
    target: str = RUN_JOB,
    import_paths: Sequence[str] = (),
) -> str:
    """Run job `job_id` if it can be claimed; returns its final status (or 'skipped').

    The job runs in its own process (`sandbox/`): confined with Landlock (`sandbox="landlock"`), or
    only without credentials (`"process"`). `target` is what that process calls (tests substitute
    a hostile loader for `run_job`, and `import_paths` to find it). `work_root` must be shared by
    the workers that may resume each other's jobs (it is `<home>/work`): the loop state saved there
    after every epoch is where a requeued job continues.
    """
    if not claim(sessions, job_id):
        logger.info("job %s was not queued (already taken or cancelled); skipping", job_id)
        return "skipped"
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        spec = dict(job.spec)
        paths = {}
        for field in ("model", "train_data", "val_data"):
            artifact = session.get(Artifact, spec[field])
            assert artifact is not None
            paths[field] = str(store.path(artifact.storage_path))
    workdir = Path(work_root).resolve() / job_id
    request = JobRequest(
        target=target,
        arguments={
            "model_path": paths["model"],
            "config": spec["config"],
            "train_path": paths["train_data"],
            "val_path": paths["val_data"],
            "recipe": spec["recipe"],
            "workdir": str(workdir),
        },
        readable=list(paths.values()),
        workdir=str(workdir),
        confine=sandbox == "landlock",
        import_paths=list(import_paths),
    )
    try:
        if request.confine:
            require_landlock()
        with Heartbeat(sessions, job_id, heartbeat_s):
            done = run_job_process(request, _record_epoch(sessions, job_id), _cancel_requested(sessions, job_id))
    except (JobProcessFailed, SandboxUnavailable) as exc:
        if not (isinstance(exc, JobProcessFailed) and exc.input_error):
            logger.error("job %s failed: %s", job_id, exc)
        with contextlib.suppress(OSError):  # a full disk must not keep the failure from being recorded
            _store_exports(sessions, store, job_id, workdir, ["log"])
        _finish(sessions, job_id, JobStatus.failed, error=str(exc))
        return JobStatus.failed.value
    try:
        _store_exports(sessions, store, job_id, workdir, done.outputs)
    except OSError as exc:
        _finish(sessions, job_id, JobStatus.failed, error=failure_reason(exc))
        return JobStatus.failed.value
    status = JobStatus.cancelled if done.status == "cancelled" else JobStatus.succeeded
    _finish(
        sessions,
        job_id,
        status,
        result={
            "statistics": done.statistics,
            "metric": done.metric,
            "compression_rate": done.compression_rate,
            "uncompressed_metric": done.uncompressed_metric,
        },
    )
    shutil.rmtree(workdir, ignore_errors=True)  # everything worth keeping is in the store now
    return status.value
