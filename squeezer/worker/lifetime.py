"""Processes that must not outlive the process that started them (Linux `PR_SET_PDEATHSIG`)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Receive `sig` when `parent_pid` (our parent) exits; exit now if it already has."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent_pid:  # it exited before the line above took effect
        os._exit(1)


def become_subreaper() -> None:
    """Orphaned descendants become our children (not init's), so that `kill_children` finds them."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def kill_children() -> None:
    """SIGKILL and reap every child we have (with `become_subreaper`: every leftover descendant)."""
    while children := _children():
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _children() -> list[int]:
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in Path(f"/proc/self/task/{task}/children").read_text().split()]
    return pids
