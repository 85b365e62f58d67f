"""The worker's watch over its running job: heartbeat, cancel, deadline and resource limits, at any moment.

Before this, a cancel was read only when the job process finished an epoch, so a job with long (or stuck)
epochs held its worker for as long as it liked. The watch is a daemon thread beside the job process that
every `poll_s`:

- stamps the job's heartbeat (every `heartbeat_s`); a beat that finds the job no longer this claim's
  stops the job process ("lost": two processes must never write one job's loop state);
- reads the row: `cancelling` stops the job process at once ("cancelled"), before the first epoch, in
  range init or in the export alike;
- checks the deadline (the job's wall-time limit, or its search's `max_wall_time_s`, whichever is first);
- measures the job's processes (resident memory together, how many) and its folder (`limits.py`).

Each stop goes through `JobRun.interrupt(reason)`, which kills the job process; `verdict` says why in a
sentence for the job row. The worker then keeps what the last finished epoch saved (`execute.py`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from squeezer.db import Job, JobStatus
from squeezer.jobs import searches, transitions
from squeezer.search.spec import DEADLINE_REASON
from squeezer.worker.limits import JobLimits, describe_bytes
from squeezer.worker.sandbox.process import JobRun

logger = logging.getLogger(__name__)


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under `folder` (links not followed: a job's links are not its bytes)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                stat = os.lstat(os.path.join(root, name))
            except FileNotFoundError:  # written and removed between the listing and now
                continue
            total += stat.st_blocks * 512 if stat.st_blocks else stat.st_size
    return total


def process_tree(pid: int) -> tuple[int, int]:
    """(resident bytes, number of processes) of `pid` and its descendants; (0, 0) once it is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    rss = 0
    for process in processes:
        try:
            rss += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return rss, len(processes)


class JobWatch:
    """A daemon thread that watches one job process (module docstring); a context manager around the run."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: str,
        owner: str,
        run: JobRun,
        workdir: Path,
        limits: JobLimits | None,
        deadline: datetime | None,
        search_deadline: datetime | None,
        heartbeat_s: float,
        poll_s: float,
        watch_cancel: bool = True,
    ) -> None:
        self.sessions, self.job_id, self.owner, self.run = sessions, job_id, owner, run
        self.workdir, self.limits, self.deadline, self.search_deadline = workdir, limits, deadline, search_deadline
        self.heartbeat_s, self.poll_s, self.watch_cancel = heartbeat_s, min(poll_s, heartbeat_s), watch_cancel
        self.verdict: str | None = None  # why the watch stopped the job, for the job row
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{job_id}", daemon=True)

    def _stop_job(self, reason: str, verdict: str) -> None:
        self.verdict = verdict
        logger.warning("job %s: %s; stopping its process", self.job_id, verdict)
        self.run.interrupt(reason)

    def _run(self) -> None:
        next_beat = time.monotonic() + self.heartbeat_s
        while not self._stop.wait(self.poll_s):
            try:
                if time.monotonic() >= next_beat:
                    next_beat += self.heartbeat_s
                    with self.sessions() as session:
                        if not transitions.heartbeat(session, self.job_id, self.owner):
                            self._stop_job("lost", "the job is no longer this worker's (requeued or deleted)")
                            return
                if self.watch_cancel and self._cancelled():
                    self._stop_job("cancelled", "cancelled")
                    return
            except Exception:  # a missed beat is not fatal; a dead database shows up elsewhere
                logger.warning("watch of job %s could not read its row", self.job_id, exc_info=True)
            verdict = self._over_limit()
            if verdict is not None:
                self._stop_job("deadline" if verdict.startswith("deadline") else "limit", verdict)
                return

    def _cancelled(self) -> bool:
        """The row says `cancelling` (a user's cancel, or its search stopped it), or the row is gone. Past
        its search's wall-time budget, a candidate is stopped as the search stops one after an epoch."""
        with self.sessions() as session:
            if self.search_deadline is not None and datetime.now(UTC) >= self.search_deadline:
                searches.stop_candidate(session, self.job_id, DEADLINE_REASON)
                self.search_deadline = None
            status = session.scalar(select(Job.status).where(Job.id == self.job_id))
            return status is None or status == JobStatus.cancelling

    def cancel_after_epoch(self) -> bool:
        """Asked by the job process after each epoch. A job told to stop there stops by itself and writes that
        epoch's outputs, so the watch leaves cancel to it from then on: a kill would only undo that work and
        make the worker export the same epoch again from its saved state."""
        if self._cancelled():
            self.watch_cancel = False
            return True
        return False

    def _over_limit(self) -> str | None:
        if self.deadline is not None and datetime.now(UTC) >= self.deadline:
            return f"deadline: the job ran past its wall-time limit ({self.deadline.isoformat(timespec='seconds')})"
        limits, pid = self.limits, self.run.pid
        if limits is None or pid is None:
            return None
        rss, count = process_tree(pid)
        self.peak_rss = max(self.peak_rss, rss)
        if rss > limits.memory_bytes:
            return f"memory limit of {describe_bytes(limits.memory_bytes)} exceeded ({describe_bytes(rss)} in use)"
        if count > limits.processes:
            return f"process limit of {limits.processes} exceeded ({count} running)"
        used = folder_bytes(self.workdir)
        if used > limits.disk_bytes:
            return (
                f"disk limit of {describe_bytes(limits.disk_bytes)} exceeded (its folder holds {describe_bytes(used)})"
            )
        return None

    def __enter__(self) -> JobWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
