"""The worker's Celery app: the shared configuration (`squeezer/jobs/queue.py`) and one thin task that
calls `execute_job`. The embedded default broker is kombu's SQLAlchemy transport on SQLite: a real
worker process, no server to install.

A worker told to stop (SIGTERM, Ctrl-C: warm or cold shutdown) stops its job process at once and
sends the job again, back in `queued` with its last epoch's loop state (`execute.py`); it then exits
without waiting for the epoch to end.
"""

from __future__ import annotations

import signal
import warnings
from collections.abc import Callable
from functools import lru_cache
from types import FrameType
from typing import Any

from celery import Celery
from celery.exceptions import SecurityWarning
from celery.signals import worker_ready, worker_shutting_down

from squeezer.db import make_engine, make_session_factory
from squeezer.jobs.queue import TASK, CeleryQueue, configured_celery
from squeezer.settings import Settings, get_settings
from squeezer.storage import LocalStore
from squeezer.worker.execute import execute_job
from squeezer.worker.limits import JobLimits, log_isolation
from squeezer.worker.sandbox.process import prestart_job_server, request_stop


def create_celery(settings: Settings | None = None) -> Celery:
    """The worker's Celery app: the shared broker configuration (`jobs/queue.py`) plus the task."""
    settings = settings or get_settings()
    app = configured_celery(settings)

    @app.task(name=TASK)
    def run(job_id: str) -> str:
        sessions, store = _resources(settings.resolved_database_url(), str(settings.resolved_storage_dir()))
        return execute_job(
            job_id,
            sessions,
            store,
            settings.home / "work",
            settings.heartbeat_s,
            settings.sandbox,
            enqueue=CeleryQueue(app).enqueue,
            limits=JobLimits.from_settings(settings),
            poll_s=settings.job_poll_s,
            accept_weaker_sandbox=settings.accept_weaker_sandbox,
        )

    @worker_ready.connect(weak=False)
    def _report_isolation(**_: Any) -> None:
        """At start, what this worker enforces on its jobs and what its kernel cannot (logged once)."""
        log_isolation(settings)

    return app


@lru_cache
def _resources(database_url: str, storage_dir: str) -> tuple[Any, LocalStore]:
    return make_session_factory(make_engine(database_url)), LocalStore(storage_dir)


@worker_ready.connect
def _prestart_job_server(**_: Any) -> None:
    """The job process server imports torch while the worker waits for its first job (solo pool: same thread)."""
    prestart_job_server()


@worker_shutting_down.connect
def _stop_jobs(**_: Any) -> None:
    """Sent from Celery's SIGTERM / SIGINT / SIGQUIT handler, on the thread that runs the job (solo pool)."""
    request_stop()


@worker_ready.connect
def _stop_jobs_first(**_: Any) -> None:
    """Stop the job before Celery's own shutdown handlers run: on a cold shutdown (SIGQUIT, a second
    Ctrl-C) Celery cancels the running task first, which the solo pool answers by raising into it,
    before `worker_shutting_down` is sent. Celery has installed its handlers by the time it is ready."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        celery_handler = signal.getsignal(sig)
        if callable(celery_handler):
            signal.signal(sig, _stopping_jobs_first(celery_handler))


def _stopping_jobs_first(
    celery_handler: Callable[[int, FrameType | None], Any],
) -> Callable[[int, FrameType | None], Any]:
    def handler(signum: int, frame: FrameType | None) -> Any:
        request_stop()
        return celery_handler(signum, frame)

    return handler


def silence_root_warning() -> None:
    """Celery warns on every start as root, which is how containers run. Only pickle makes root unsafe
    (Celery then refuses to start without C_FORCE_ROOT) and this app accepts JSON only. Celery has no
    setting for the warning, so exactly that one is filtered, the way the `warnings` module documents."""
    warnings.filterwarnings("ignore", "You're running the worker with superuser privileges", SecurityWarning)


def run_worker(settings: Settings | None = None, concurrency: int = 1) -> None:
    """A worker process (`squeezer worker`): solo pool, one job at a time."""
    silence_root_warning()
    create_celery(settings).worker_main(
        [
            "worker",
            "--pool=solo",
            f"--concurrency={concurrency}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


if __name__ == "__main__":
    run_worker()
