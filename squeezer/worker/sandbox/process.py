"""Start a job process (`child.py`) and relay what it says; the worker side of the sandbox.

The worker holds the credentials (database, broker, store) and the job process holds the upload.
The process gets an environment of a few harmless variables, a folder of its own and read access to
its inputs; its messages are validated (`protocol.py`) and its outputs are copied by kind from fixed
names in its folder, never from a path it chose, and never through a link.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from squeezer.errors import SqueezerError
from squeezer.worker.sandbox.protocol import (
    MAX_MESSAGE_BYTES,
    DoneMessage,
    EpochMessage,
    JobRequest,
    parse_message,
)

logger = logging.getLogger(__name__)

# what a job process may inherit: locale, search paths and thread/device selection; no secrets
INHERITED_ENV = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "PYTHONPATH",
    "LD_LIBRARY_PATH",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
)
EXIT_GRACE_S = 30.0


class JobProcessFailed(SqueezerError):
    """The job process reported a failure, sent something invalid, or died."""

    def __init__(self, reason: str, input_error: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.input_error = reason, input_error


def job_environment(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in INHERITED_ENV}
    env.update(HOME=str(workdir), PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    return env


def _read_messages(events: IO[bytes]) -> bytes:
    line = events.readline(MAX_MESSAGE_BYTES + 1)
    if line and not line.endswith(b"\n"):
        raise JobProcessFailed(f"the job process sent a message longer than {MAX_MESSAGE_BYTES} bytes")
    return line


def _death(returncode: int) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"the job process was killed by {name}{hint} before it finished; see the job's log"
    return f"the job process exited with status {returncode} without a result; see the job's log"


def run_job_process(
    request: JobRequest,
    on_epoch: Callable[[EpochMessage], None],
    should_cancel: Callable[[], bool],
) -> DoneMessage:
    """Run `request` in a new job process; its `done` message, or `JobProcessFailed`."""
    workdir = Path(request.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "squeezer.worker.sandbox.child", str(os.getpid()), str(write_fd)],
        stdin=subprocess.PIPE,
        pass_fds=(write_fd,),
        env=job_environment(workdir),
        cwd=workdir,
        text=True,
    )
    os.close(write_fd)
    assert process.stdin is not None
    answered = False  # True once it sent its last message: it is expected to exit by itself
    try:
        with os.fdopen(read_fd, "rb") as events:
            process.stdin.write(request.model_dump_json() + "\n")
            process.stdin.flush()
            while line := _read_messages(events):
                try:
                    message = parse_message.validate_json(line)
                except ValidationError as exc:
                    raise JobProcessFailed(f"the job process sent an invalid message: {exc}") from exc
                if not isinstance(message, EpochMessage):
                    answered = True
                    if message.type == "failed":
                        raise JobProcessFailed(message.reason, message.input_error)
                    return message
                on_epoch(message)
                process.stdin.write("cancel\n" if should_cancel() else "continue\n")
                process.stdin.flush()
        raise JobProcessFailed(_death(process.wait()))
    except BrokenPipeError as exc:  # it died while we wrote to it
        raise JobProcessFailed(_death(process.wait())) from exc
    finally:
        if not answered and process.poll() is None:  # we stop listening (an error here): so does it
            process.kill()
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        try:
            process.wait(timeout=EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            logger.warning("job process %d did not exit after its last message; killing it", process.pid)
            process.kill()
            process.wait()
