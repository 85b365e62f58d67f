"""A job's states, in the one place that the API, the workers, the SDK and the dashboard read them from.

Free of SQLAlchemy and torch, so that the SDK and the sandboxed job process can import it; the
dashboard learns which states are final from each job's `terminal` field rather than a copy of its own.
"""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    cancelling = "cancelling"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """The job has ended: nothing changes it any more (only a delete)."""
        return self in TERMINAL

    @property
    def is_active(self) -> bool:
        """Queued or held by a worker: it counts against the key's quota and may still change."""
        return self not in TERMINAL


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})
ACTIVE = frozenset(JobStatus) - TERMINAL
