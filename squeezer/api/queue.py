"""What the API needs from the job queue: hand over a job id, and say whether the broker answers.

The Celery implementation is `squeezer.jobs.queue.CeleryQueue`; tests pass their own.
"""

from __future__ import annotations

from typing import Protocol


class JobQueue(Protocol):
    def enqueue(self, job_id: str, priority: int) -> None:
        """Send the job's id (only the id) to the workers."""

    def ping(self) -> None:
        """Raise if the broker cannot be reached."""
