"""What one job may use, and the two places that enforce it.

A job process runs an upload's model on a shared worker, so each job gets a wall-time limit, a memory
limit, a CPU-time limit, a process limit, an open-files limit and a limit on its folder's size. Two
mechanisms enforce them, because neither covers everything alone:

- the job process sets kernel limits on itself before it runs the job (`apply_rlimits`): CPU time
  (`RLIMIT_CPU`), open files (`RLIMIT_NOFILE`), the size of any one file it writes (`RLIMIT_FSIZE`, the
  disk limit) and its address space (`RLIMIT_AS`, what it already maps plus the memory limit plus
  slack: a backstop for an allocation too sudden for the watch). These hold even against a job running
  as root, and cost nothing while the job runs;
- the worker's watch (`supervision.py`) measures the job every `job_poll_s`: the resident memory of the
  job's processes together, how many there are, and the size of its folder, and stops the job past a
  limit. `RLIMIT_NPROC` is not used: it counts every process of the user, the worker's own included.

A cgroup would be exact for memory and processes, but needs a delegated cgroup v2 subtree, which neither
`serve` on a desktop nor this project's compose file can count on; compose sets container-wide
`mem_limit` and `pids_limit` on the worker as the outer wall instead.
"""

from __future__ import annotations

import os
import resource
from dataclasses import asdict, dataclass
from typing import Any

GIB = 1024**3
ADDRESS_SLACK = 2 * GIB  # address space is not memory: glibc arenas and thread stacks reserve more than they use


@dataclass(frozen=True)
class JobLimits:
    wall_time_s: float
    memory_bytes: int
    cpu_time_s: float
    processes: int
    open_files: int
    disk_bytes: int

    @classmethod
    def from_settings(cls, settings: Any) -> JobLimits:
        """The settings' limits, with 0 meaning sized to this machine (75% of its memory, wall time x cores)."""
        import psutil

        memory = settings.job_max_memory_bytes or int(0.75 * psutil.virtual_memory().total)
        cpu = settings.job_max_cpu_time_s or settings.job_max_wall_time_s * (os.cpu_count() or 1)
        return cls(
            wall_time_s=settings.job_max_wall_time_s,
            memory_bytes=memory,
            cpu_time_s=cpu,
            processes=settings.job_max_processes,
            open_files=settings.job_max_open_files,
            disk_bytes=settings.job_max_disk_bytes,
        )

    def with_wall_time(self, seconds: float | None) -> JobLimits:
        """A job's own wall-time limit (its recipe's), never above the service's."""
        if seconds is None:
            return self
        return JobLimits(**{**asdict(self), "wall_time_s": min(self.wall_time_s, seconds)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_bytes(size: float) -> str:
    return f"{size / GIB:.2f} GiB" if size >= GIB / 4 else f"{size / 1024**2:.0f} MiB"


def _address_space() -> int:
    """What this process maps now (VmSize): a fork of the job server starts with torch already mapped."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def apply_rlimits(limits: dict[str, Any]) -> None:
    """Set the kernel's limits on this (job) process and what it starts; called before the job runs."""
    cpu = max(1, int(limits["cpu_time_s"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))  # SIGXCPU first (named in the reason), then SIGKILL
    _, hard_files = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = limits["open_files"] if hard_files == resource.RLIM_INFINITY else min(limits["open_files"], hard_files)
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["disk_bytes"], limits["disk_bytes"]))
    space = _address_space() + limits["memory_bytes"] + ADDRESS_SLACK
    resource.setrlimit(resource.RLIMIT_AS, (space, space))


def limit_reason(exc: BaseException, limits: dict[str, Any] | None) -> str | None:
    """The limit a job's own error came from, named with its value; None when it was not a limit."""
    import errno

    if limits is None:
        return None
    text = str(exc)
    if isinstance(exc, MemoryError) or "can't allocate memory" in text or "std::bad_alloc" in text:
        return f"memory limit of {describe_bytes(limits['memory_bytes'])} exceeded (an allocation failed: {text[:200]})"
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
        return f"open-files limit of {limits['open_files']} reached ({exc})"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return f"disk limit of {describe_bytes(limits['disk_bytes'])} reached writing one file ({exc})"
    return None


def log_isolation(settings: Any) -> None:
    """One log line with the limits this worker sets on every job, and one naming what its sandbox lacks."""
    import logging

    from squeezer.worker.sandbox.confine import MIN_ABI, landlock_abi, missing_rights

    logger = logging.getLogger(__name__)
    limits = JobLimits.from_settings(settings)
    logger.info(
        "job limits: wall time %.0f s, memory %s, CPU time %.0f s, %d processes, %d open files, disk %s",
        limits.wall_time_s,
        describe_bytes(limits.memory_bytes),
        limits.cpu_time_s,
        limits.processes,
        limits.open_files,
        describe_bytes(limits.disk_bytes),
    )
    if settings.sandbox != "landlock":
        logger.warning("sandbox 'process': job processes are not confined (for trusted uploads only)")
        return
    abi = landlock_abi()
    if abi < MIN_ABI:
        missing = "; ".join(missing_rights(abi)) if abi else "everything (no Landlock)"
        verdict = (
            "runs jobs anyway (SQUEEZER_ACCEPT_WEAKER_SANDBOX)" if settings.accept_weaker_sandbox else "refuses jobs"
        )
        logger.warning(
            "Landlock ABI %s < %d: a job could not be stopped from %s; this worker %s", abi, MIN_ABI, missing, verdict
        )
