"""The worker's side of recovery: a heartbeat on the job it runs, which notices when the job is gone.

A worker refreshes `job.heartbeat_at` while it runs a job; the sweep (`squeezer.jobs.transitions.
recover_stale_jobs`, run by the API and by `squeezer recover`) requeues a running job whose heartbeat
is older than `stale_after_s`. A beat that finds the job no longer this claim's (requeued by the
sweep while this worker was unreachable, or deleted) calls `on_lost`, which stops the job's process:
two processes must never write one job's loop state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from squeezer.jobs import transitions

__all__ = ["Heartbeat"]

logger = logging.getLogger(__name__)


class Heartbeat:
    """A daemon thread that stamps the job row every `interval_s` while the job runs."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: str,
        owner: str,
        interval_s: float,
        on_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self.sessions, self.job_id, self.owner, self.interval_s = sessions, job_id, owner, interval_s
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self.sessions() as session:
                    alive = transitions.heartbeat(session, self.job_id, self.owner)
            except Exception:  # a missed beat is not fatal; a dead database shows up elsewhere
                logger.warning("heartbeat of job %s failed", self.job_id, exc_info=True)
                continue
            if not alive:
                logger.warning("job %s is no longer this worker's (requeued or deleted); stopping it", self.job_id)
                self.on_lost()
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
