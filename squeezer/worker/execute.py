"""Run one job row: claim it, run it, and record everything in the database as it happens.

`execute_job(job_id, ...)` is what the Celery task calls; it holds the logic so it can be tested
without a broker. The row is the truth: claiming is one conditional UPDATE (a duplicate delivery
finds the row taken and does nothing), cancellation is read from the row after every epoch, and
every epoch's record becomes a `job_metric` row as soon as it exists.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from squeezer.db import Artifact, Export, Job, JobMetric, JobStatus
from squeezer.db.models import EXPORT_FILENAMES
from squeezer.recipe import Recipe
from squeezer.storage import LocalStore
from squeezer.worker.recovery import Heartbeat
from squeezer.worker.runner import JobInputError, run_job

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


def _record_epoch(sessions: sessionmaker[Session], job_id: str) -> Callable[[dict[str, Any]], None]:
    def record(r: dict[str, Any]) -> None:
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


def _store_exports(sessions: sessionmaker[Session], store: LocalStore, job_id: str, artifacts: dict[str, str]) -> None:
    with sessions() as session:
        for kind, path in artifacts.items():
            if kind not in EXPORT_FILENAMES:
                continue
            stored = store.save_file(f"jobs/{job_id}/{EXPORT_FILENAMES[kind]}", path)
            row = session.scalars(select(Export).where(Export.job_id == job_id, Export.kind == kind)).first()
            if row is None:  # a re-run job replaces its exports
                row = Export(job_id=job_id, kind=kind)
                session.add(row)
            row.storage_path, row.size_bytes, row.sha256 = stored.key, stored.size_bytes, stored.sha256
        session.commit()


def failure_reason(exc: BaseException) -> str:
    """What the job row says about a failure; a full disk is named as such."""
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    # torch.save reports a short write as a RuntimeError from its zip writer (inline_container.cc)
    if full or (isinstance(exc, RuntimeError) and "inline_container.cc" in str(exc)):
        where = f" writing {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
        return f"storage full{where} ({exc}); files written before, the last checkpoint included, are intact"
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _job_log(path: Path) -> Iterator[None]:
    """Everything the library and the runner log while the job runs also goes to the job's own log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("squeezer")
    previous = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def execute_job(
    job_id: str, sessions: sessionmaker[Session], store: LocalStore, work_root: str | Path, heartbeat_s: float = 10.0
) -> str:
    """Run job `job_id` if it can be claimed; returns its final status (or 'skipped').

    `work_root` must be shared by the workers that may resume each other's jobs (it is `<home>/work`):
    the loop state saved there after every epoch is where a requeued job continues.
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
            paths[field] = store.path(artifact.storage_path)
    workdir = Path(work_root) / job_id
    log_path = workdir / "job.log"
    try:
        with _job_log(log_path), Heartbeat(sessions, job_id, heartbeat_s):
            result = run_job(
                paths["model"],
                spec["config"],
                paths["train_data"],
                paths["val_data"],
                Recipe.model_validate(spec["recipe"]),
                workdir,
                on_epoch=_record_epoch(sessions, job_id),
                should_cancel=_cancel_requested(sessions, job_id),
            )
    except JobInputError as exc:
        _store_exports(sessions, store, job_id, {"log": str(log_path)})
        _finish(sessions, job_id, JobStatus.failed, error=str(exc))
        return JobStatus.failed.value
    except Exception as exc:  # the reason goes to the row; the traceback to the logs
        logger.error("job %s failed:\n%s", job_id, traceback.format_exc())
        with contextlib.suppress(OSError), log_path.open("a", encoding="utf-8") as log:
            log.write(traceback.format_exc())
        with contextlib.suppress(OSError):  # a full disk must not keep the failure from being recorded
            _store_exports(sessions, store, job_id, {"log": str(log_path)})
        _finish(sessions, job_id, JobStatus.failed, error=failure_reason(exc))
        return JobStatus.failed.value
    result.artifacts["log"] = str(log_path)
    try:
        _store_exports(sessions, store, job_id, result.artifacts)
    except OSError as exc:
        _finish(sessions, job_id, JobStatus.failed, error=failure_reason(exc))
        return JobStatus.failed.value
    status = JobStatus.cancelled if result.status == "cancelled" else JobStatus.succeeded
    _finish(
        sessions,
        job_id,
        status,
        result={
            "statistics": result.statistics,
            "metric": result.metric,
            "compression_rate": result.compression_rate,
            "uncompressed_metric": result.uncompressed_metric,
        },
    )
    shutil.rmtree(workdir, ignore_errors=True)  # everything worth keeping is in the store now
    return status.value
