"""Confine the current process with Landlock before it touches an upload.

Landlock (Linux 6.7+ for the network part) lets an unprivileged process give up access it does
not need, for itself and every thread and child it starts afterwards; no root, no container. A job
process keeps:

- read access to the Python installation, the `squeezer` package, the system libraries and the few
  files under /proc, /sys and /dev that torch, numpy and onnxruntime read; and to the job's own inputs;
- read and write access to the job's own folder (its outputs, loop state, log and TMPDIR);
- no TCP connect or bind at all (the database and the broker are out of reach even without credentials);
- no signals and no abstract UNIX sockets outside its own domain (ABI 6, Linux 6.12+);
- no ptrace of, or /proc/<pid>/environ reads from, processes outside it (Landlock does this always).

It must be called while the process has a single thread: Landlock restricts the calling thread and
what it starts later, so threads that exist already (numpy's BLAS pool, say) would stay free.
"""

from __future__ import annotations

import glob
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from squeezer.errors import SqueezerError

MIN_ABI = 6  # signals and abstract UNIX sockets scoped (Linux 6.12); 4 (TCP) and 5 (device ioctls) before it
WEAKEST_ABI = 4  # what `accept_weaker_sandbox` still runs jobs under: file and TCP rules, no scoping
MISSING_BELOW = {  # what a kernel below MIN_ABI cannot stop a job from doing, by ABI
    5: "ioctl on device files it may open",
    6: "signalling other processes of the worker's user, and connecting to their abstract UNIX sockets",
}

# what torch, numpy and onnxruntime read outside the Python installation; missing ones are skipped
SYSTEM_READ_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/sys", "/proc/self", "/proc/driver/nvidia")
SYSTEM_READ_FILES = (
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/passwd",
    "/etc/group",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/filesystems",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
)
DEVICE_GLOBS = ("/dev/nvidia*", "/dev/dri/*")  # read, write and ioctl: CUDA talks to its devices


class SandboxUnavailable(SqueezerError):
    """This machine cannot confine job processes."""


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 where there is none."""
    if sys.platform != "linux":
        return 0
    from py_landlock import LandlockError, get_abi_version

    try:
        return int(get_abi_version())
    except LandlockError:
        return 0


def missing_rights(abi: int) -> list[str]:
    """What a job could still do under Landlock ABI `abi`, that MIN_ABI would stop."""
    return [what for needed, what in sorted(MISSING_BELOW.items()) if abi < needed]


def require_landlock(accept_weaker: bool = False) -> int:
    """The Landlock ABI, when it covers what the design relies on (files, TCP, signals, abstract sockets);
    `SandboxUnavailable` otherwise. `accept_weaker` (SQUEEZER_ACCEPT_WEAKER_SANDBOX) runs jobs from ABI 4."""
    abi = landlock_abi()
    if abi >= MIN_ABI or (accept_weaker and abi >= WEAKEST_ABI):
        return abi
    missing = "; ".join(missing_rights(abi)) if abi >= WEAKEST_ABI else "files and TCP"
    raise SandboxUnavailable(
        f"this worker cannot confine job processes as required: Landlock ABI {abi or 'absent'} "
        f"({sys.platform} {os.uname().release}) cannot stop a job's {missing}; ABI {MIN_ABI}+ (Linux 6.12+) is needed. "
        "Run workers on such a kernel, set SQUEEZER_ACCEPT_WEAKER_SANDBOX=1 to accept this on ABI "
        f"{WEAKEST_ABI}+, or SQUEEZER_SANDBOX=process to run jobs without credentials but unconfined"
    )


def python_dirs() -> list[Path]:
    """The interpreter, its standard library and site-packages, and the squeezer package itself."""
    import squeezer

    dirs = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(squeezer.__file__).parent}
    return sorted(d.resolve() for d in dirs)


def confine(readable: Iterable[str | os.PathLike[str]], writable: Iterable[str | os.PathLike[str]]) -> None:
    """Restrict this process (and all it starts) to the paths above plus `readable` and `writable`."""
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else threading.active_count()
    if threads != 1:  # native threads count too: a BLAS pool started by an import would stay unconfined
        raise SandboxUnavailable(f"confine() needs a single-threaded process, this one has {threads} threads")
    require_landlock()
    from py_landlock import AccessFs, Landlock

    read_dir = AccessFs.READ_FILE | AccessFs.READ_DIR | AccessFs.EXECUTE
    read_file = AccessFs.READ_FILE | AccessFs.EXECUTE
    # strict only where the kernel has every right asked for; below MIN_ABI the worker accepted the weaker
    # sandbox explicitly (require_landlock said what is missing), so rights newer than the kernel are dropped
    policy = Landlock(strict=landlock_abi() >= MIN_ABI)
    for path in [*SYSTEM_READ_DIRS, *python_dirs(), *SYSTEM_READ_FILES, *readable]:
        if os.path.exists(path):
            policy.add_path_rule(path, access=read_dir if os.path.isdir(path) else read_file)
    devices = [p for pattern in DEVICE_GLOBS for p in glob.glob(pattern)]
    for device in devices:
        policy.add_path_rule(device, access=AccessFs.READ_FILE | AccessFs.WRITE_FILE | AccessFs.IOCTL_DEV)
    for folder in writable:
        policy.allow_read_write(folder)
    policy.apply()  # also sets no_new_privs; TCP and scopes are denied because no rule allows them
