"""Run a job in a job process (`child.py`) and relay what it says; the worker side of the sandbox.

The worker holds the credentials (database, broker, store) and the job process holds the upload.
The process gets an environment of a few harmless variables, a folder of its own and read access to
its inputs; its messages are validated (`protocol.py`) and its outputs are copied by kind from fixed
names in its folder, never from a path it chose, and never through a link.

Job processes are forks of a job process server, started once per worker, which has imported torch.

Only the worker decides when a job stops. The server runs in a process group of its own and ignores
SIGINT and SIGTERM (so do its forks), so a terminal's Ctrl-C or a process manager's SIGTERM to the
worker's group reaches the worker alone. A stopping worker (`request_stop`, on Celery's shutdown) kills
its job process and gets `JobInterrupted`: the job is resumable from its last completed epoch, not
failed. The same happens to a job that is no longer this worker's (`JobRun.interrupt("lost")`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

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

    def __init__(self, reason: str, input_error: bool = False, reported: bool = False) -> None:
        super().__init__(reason)
        self.input_error = input_error
        self.reported = reported  # the job said it failed (it did not just die)


class JobInterrupted(SqueezerError):
    """The worker stopped the job process before it finished: the worker is stopping (`reason`
    "stopping") or the job is no longer its own ("lost"). Nothing failed; the job can resume."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the job process was stopped ({reason}) before it finished")
        self.reason = reason


class JobRun:
    """One job process as the worker sees it, which another thread or a signal handler can interrupt.

    No lock: `interrupt` may run in a signal handler on the thread that is inside `started`, and both
    only assign and then read, so whichever comes second sees the other's write and kills the process.
    """

    def __init__(self) -> None:
        self.pid: int | None = None
        self.reason: str | None = None

    def started(self, pid: int) -> None:
        self.pid = pid
        if self.reason is not None:
            _kill(pid)

    def ended(self) -> None:
        self.pid = None

    def interrupt(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        pid = self.pid
        if pid is not None:
            _kill(pid)


_stopping = threading.Event()
_runs: set[JobRun] = set()


def request_stop() -> None:
    """The worker is stopping: kill the job processes now (each job keeps its last completed epoch) and
    start no other. Safe in a signal handler."""
    _stopping.set()
    for run in list(_runs):
        run.interrupt("stopping")


def stop_requested() -> bool:
    return _stopping.is_set()


def job_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in INHERITED_ENV}
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
    return env


class JobServer:
    """The job process server: a process without credentials that forks one job process per job.

    One job at a time; `launch` gives the job's pid and pipes, `wait` its exit code.
    """

    def __init__(self) -> None:
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "squeezer.worker.sandbox.child", str(os.getpid()), str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env=job_environment(),
                cwd="/",
                process_group=0,  # signals to the worker's group (a terminal's Ctrl-C) are the worker's to act on
            )
        logger.info("job process server %d started", self.process.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def _receive(self, timeout: float | None = None) -> dict[str, int]:
        self.control.settimeout(timeout)
        message = self.control.recv(256)
        if not message:
            raise JobProcessFailed(f"the job process server exited ({self.process.wait()}); see the worker's log")
        reply: dict[str, int] = json.loads(message)
        return reply

    def launch(self) -> tuple[int, IO[bytes], IO[str]]:
        """Fork a job process; its pid, its events (read) and its answers (write, the request first)."""
        events_r, events_w = os.pipe()
        answers_r, answers_w = os.pipe()
        try:
            socket.send_fds(self.control, [b"job"], [events_w, answers_r])
        finally:
            os.close(events_w)
            os.close(answers_r)
        events, answers = os.fdopen(events_r, "rb"), os.fdopen(answers_w, "w", encoding="utf-8")
        try:
            return self._receive()["pid"], events, answers
        except BaseException:
            events.close()
            answers.close()
            raise

    def wait(self, pid: int) -> int:
        """The job's exit code (negative: the signal that killed it); kills it after EXIT_GRACE_S."""
        try:
            return self._receive(timeout=EXIT_GRACE_S)["exit"]
        except TimeoutError:
            logger.warning("job process %d did not exit after its last message; killing it", pid)
            _kill(pid)
            return self._receive()["exit"]

    def close(self) -> None:
        self.control.close()  # the server exits when its channel closes
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# The main thread keeps its server between jobs (Celery's solo pool runs jobs there). A server dies
# with the thread that started it, so any other thread starts one for its job and closes it after.
_server: JobServer | None = None


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def prestart_job_server() -> JobServer:
    """The main thread's server, started now if needed: it imports torch while the worker waits."""
    global _server
    if _server is None or not _server.alive():
        if _server is not None:
            _server.close()
        _server = JobServer()
    return _server


@atexit.register
def _close_server() -> None:
    global _server
    if _server is not None:
        _server.close()
        _server = None


def _kill(pid: int) -> None:
    """SIGKILL a job process that has not been reported as ended. Its server reaps it just before that
    report, so the pid is the job's, or freed a moment ago (then there is nothing to kill)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _read_message(events: IO[bytes]) -> bytes:
    line = events.readline(MAX_MESSAGE_BYTES + 1)
    if line and not line.endswith(b"\n"):
        raise JobProcessFailed(f"the job process sent a message longer than {MAX_MESSAGE_BYTES} bytes")
    return line


def _death(returncode: int, limits: dict[str, Any] | None = None) -> str:
    if returncode == -signal.SIGXCPU and limits is not None:
        return f"CPU-time limit of {limits['cpu_time_s']:.0f} s exceeded (the kernel stopped the job process)"
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"the job process was killed by {name}{hint} before it finished; see the job's log"
    return f"the job process exited with status {returncode} without a result; see the job's log"


def run_job_process(
    request: JobRequest,
    on_epoch: Callable[[EpochMessage], None],
    should_cancel: Callable[[], bool],
    run: JobRun | None = None,
) -> DoneMessage:
    """Run `request` in a job process; its `done` message, or `JobProcessFailed`, or `JobInterrupted`
    when it was stopped through `run` (or by `request_stop`) before it finished."""
    run = run or JobRun()
    _runs.add(run)
    if _stopping.is_set():
        run.interrupt("stopping")
    try:
        if run.reason is not None:
            raise JobInterrupted(run.reason)
        Path(request.workdir).mkdir(parents=True, exist_ok=True)
        server = prestart_job_server() if _on_main_thread() else JobServer()
        try:
            return _relay(server, request, on_epoch, should_cancel, run)
        except JobProcessFailed as exc:
            if run.reason is not None and not exc.reported:  # its death, or its server's, was ours
                raise JobInterrupted(run.reason) from exc
            raise
        except Exception as exc:  # raised into us while we stop it (Celery's cold shutdown does): part of the stop
            if run.reason is not None:
                raise JobInterrupted(run.reason) from exc
            raise
        finally:
            if server is not _server:
                server.close()
    finally:
        _runs.discard(run)


def _relay(
    server: JobServer,
    request: JobRequest,
    on_epoch: Callable[[EpochMessage], None],
    should_cancel: Callable[[], bool],
    run: JobRun,
) -> DoneMessage:
    pid, events, answers = server.launch()
    run.started(pid)
    try:
        return _listen(server, pid, events, answers, request, on_epoch, should_cancel)
    finally:
        run.ended()


def _listen(
    server: JobServer,
    pid: int,
    events: IO[bytes],
    answers: IO[str],
    request: JobRequest,
    on_epoch: Callable[[EpochMessage], None],
    should_cancel: Callable[[], bool],
) -> DoneMessage:
    final: DoneMessage | JobProcessFailed | None = None
    try:
        with events, answers:
            answers.write(request.model_dump_json() + "\n")
            answers.flush()
            while final is None and (line := _read_message(events)):
                try:
                    message = parse_message.validate_json(line)
                except ValidationError as exc:
                    raise JobProcessFailed(f"the job process sent an invalid message: {exc}") from exc
                if isinstance(message, EpochMessage):
                    on_epoch(message)
                    answers.write("cancel\n" if should_cancel() else "continue\n")
                    answers.flush()
                elif message.type == "failed":
                    final = JobProcessFailed(message.reason, message.input_error, reported=True)
                else:
                    final = message
    except BrokenPipeError:  # it died while we wrote to it: the exit code below says how
        pass
    except BaseException:
        _kill(pid)  # we stop listening (an error here), so it stops too
        server.wait(pid)
        raise
    code = server.wait(pid)
    if isinstance(final, JobProcessFailed):
        raise final
    if final is None:
        raise JobProcessFailed(_death(code, request.limits))
    return final
