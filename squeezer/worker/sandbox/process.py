"""Start a job process (`child.py`) and relay what it says; the worker side of the sandbox.

The worker holds the credentials (database, broker, store) and the job process holds the upload.
The process gets an environment of a few harmless variables, a folder of its own and read access to
its inputs; its messages are validated (`protocol.py`) and its outputs are copied by kind from fixed
names in its folder, never from a path it chose, and never through a link.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
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


def job_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in INHERITED_ENV}
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    return env


@dataclass
class JobProcess:
    """A started job process: `stdin` takes the request and the answers, `events` gives its messages."""

    process: subprocess.Popen[str]
    events: IO[bytes]

    @classmethod
    def start(cls) -> JobProcess:
        read_fd, write_fd = os.pipe()
        process = subprocess.Popen(
            [sys.executable, "-m", "squeezer.worker.sandbox.child", str(os.getpid()), str(write_fd)],
            stdin=subprocess.PIPE,
            pass_fds=(write_fd,),
            env=job_environment(),
            cwd="/",
            text=True,
        )
        os.close(write_fd)
        return cls(process, os.fdopen(read_fd, "rb"))

    def discard(self) -> None:
        """Stop a job process that has not been given a job."""
        self.events.close()
        if self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        self.process.kill()
        self.process.wait()


# the next job's process, started in advance. Only the main thread keeps one (Celery's solo pool runs
# jobs there): a job process dies with the thread that started it, so another thread's would be lost.
_spare: JobProcess | None = None


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def take_job_process() -> JobProcess:
    """The job process started after the previous job (its imports done meanwhile), or a new one."""
    global _spare
    spare, _spare = (_spare, None) if _on_main_thread() else (None, _spare)
    if spare is not None and spare.process.poll() is None:
        logger.info("job process %d (started in advance)", spare.process.pid)
        return spare
    if spare is not None:
        spare.discard()
    job = JobProcess.start()
    logger.info("job process %d (started now)", job.process.pid)
    return job


def prestart_job_process() -> None:
    """Start the next job's process now, so that it has imported torch by the time a job comes."""
    global _spare
    if _on_main_thread() and _spare is None:
        _spare = JobProcess.start()


@atexit.register
def _discard_spare() -> None:
    global _spare
    if _spare is not None:
        _spare.discard()
        _spare = None


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
    prestart: bool = True,
) -> DoneMessage:
    """Run `request` in a job process; its `done` message, or `JobProcessFailed`.

    Then start the next job's process (`prestart=True`): it imports torch and the runner while this
    worker waits for its next job, which saves that job about 3 s.
    """
    Path(request.workdir).mkdir(parents=True, exist_ok=True)
    job = take_job_process()
    process, events = job.process, job.events
    assert process.stdin is not None
    answered = False  # True once it sent its last message: it is expected to exit by itself
    try:
        with events:
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
        if prestart:
            prestart_job_process()
