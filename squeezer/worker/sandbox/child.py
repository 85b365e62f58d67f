"""The job processes: `python -m squeezer.worker.sandbox.child WORKER_PID CONTROL_FD`.

A worker starts this once (its "job process server"), with an environment that holds no
credentials; it dies with the worker. It imports torch and the runner once, then, for each job,
receives two fresh pipes over CONTROL_FD (a UNIX socket) and forks. The fork is single-threaded,
which Landlock needs (it restricts the calling thread and what that starts later, and the imports
have started BLAS threads), so the fork can confine itself (`confine.py`) before it reads the
request and runs the job. The server then reports the fork's pid and, once it has ended, its exit
code. Forking a warm process costs milliseconds; starting one and importing all that, about 6 s.

The fork reads the `JobRequest` as the first line of its answers pipe. Each epoch goes out as a JSON
line on its events pipe and waits for the worker's answer ("continue" or "cancel"); the last line is
`done` or `failed`. Fresh pipes per job: nothing a job leaves behind can reach the next one. The
job's log is `job.log` in its own folder, the only one it can write.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from squeezer.jobs.exports import EXPORTS  # the runner writes its outputs under these names
from squeezer.worker.lifetime import become_subreaper, die_with_parent, kill_children

# imported once by the server, so that no job pays for them. Beyond the runner, torch imports these
# lazily on a job's first torch.export load, lift and ONNX export (about 2.5 s here, measured); a module
# a future torch moves is skipped. Imports only: a torch op here would start OpenMP's thread pool,
# which a fork cannot use.
WARM_IMPORTS = (
    "squeezer.worker.runner",
    "squeezer.compression.export",
    "squeezer.worker.sandbox.confine",
    "squeezer.worker.sandbox.protocol",
    "squeezer.worker.failures",
    "onnx",
    "onnxruntime",
    "safetensors.torch",
    "torch.onnx",
    "torch._dynamo",
    "torch._functorch.aot_autograd",
    "torch._export.serde.serialize",
    "torch.export.pt2_archive._package",
    "torch.export._trace",
    "torch.export._unlift",
    "torch.fx.experimental.symbolic_shapes",
    "torch.utils.flop_counter",
    *(f"torch.onnx._internal.torchscript_exporter.symbolic_opset{v}" for v in (7, 8, *range(11, 21))),
)


class Channel:
    """JSON lines out on the events pipe; one-word answers in on the answers pipe."""

    def __init__(self, events: BinaryIO, answers: TextIO) -> None:
        self.events, self.answers = events, answers
        self.cancel = False

    def send(self, message: dict[str, Any]) -> None:
        self.events.write(json.dumps(message).encode() + b"\n")
        self.events.flush()

    def on_epoch(self, record: dict[str, Any]) -> None:
        self.send({"type": "epoch", **record})
        self.cancel = self.answers.readline().strip() != "continue"  # no answer (the worker is gone): stop

    def should_cancel(self) -> bool:
        return self.cancel


def _job_log(workdir: Path) -> None:
    handler = logging.FileHandler(workdir / "job.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("%(asctime)s %(levelname)s job process %(name)s: %(message)s"))
    root = logging.getLogger("squeezer")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    root.addHandler(stderr)


def run(request_line: str, channel: Channel) -> None:
    from squeezer.worker.sandbox.protocol import JobRequest

    request = JobRequest.model_validate_json(request_line)
    workdir = Path(request.workdir)
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    os.environ.update(HOME=str(workdir), TMPDIR=str(workdir / "tmp"))
    tempfile.tempdir = str(workdir / "tmp")  # the server's imports cached /tmp already, which is not writable here
    sys.path[:0] = request.import_paths
    if request.confine:
        from squeezer.worker.sandbox.confine import confine

        confine([*request.readable, *request.import_paths], [workdir])
    if request.limits is not None:
        from squeezer.worker.limits import apply_rlimits

        apply_rlimits(request.limits)
    _job_log(workdir)
    log = logging.getLogger("squeezer.worker.job")
    from squeezer.worker.limits import limit_reason

    try:
        from squeezer.worker.failures import failure_reason
        from squeezer.worker.runner import JobInputError

        module, _, function = request.target.partition(":")
        target = getattr(importlib.import_module(module), function)
        result = target(**request.arguments, on_epoch=channel.on_epoch, should_cancel=channel.should_cancel)
    except JobInputError as exc:
        log.error("%s", exc)
        channel.send({"type": "failed", "input_error": True, "reason": str(exc)})
        return
    except Exception as exc:  # the reason goes to the worker; the traceback to the job's log
        log.error("the job failed:\n%s", traceback.format_exc())
        reason = limit_reason(exc, request.limits) or failure_reason(exc)
        channel.send({"type": "failed", "input_error": False, "reason": reason})
        return
    channel.send(
        {
            "type": "done",
            "status": result.status,
            "error": getattr(result, "error", None),
            "uncompressed_metric": result.uncompressed_metric,
            "metric": result.metric,
            "compression_rate": result.compression_rate,
            "statistics": result.statistics,
            # a target other than run_job (a test's stand-in) may measure nothing
            "latency": getattr(result, "latency", {}),
            "warnings": getattr(result, "warnings", []),
            "outputs": sorted(k for k, e in EXPORTS.items() if (workdir / e.filename).is_file()),
        }
    )


def _job(events_fd: int, answers_fd: int) -> None:
    """The fork: run the request that comes first on the answers pipe, then exit."""
    answers = os.fdopen(answers_fd, "r", encoding="utf-8")
    try:
        run(answers.readline(), Channel(os.fdopen(events_fd, "wb"), answers))
        status = 0
    except BaseException:
        traceback.print_exc()
        status = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def serve(control: socket.socket) -> None:
    """Fork one job per request, one at a time, and tell the worker each fork's pid and exit code."""
    while True:
        message, fds, _, _ = socket.recv_fds(control, 64, 2)
        if not message:  # the worker closed the channel: it is gone or no longer needs us
            return
        events_fd, answers_fd = fds
        pid = os.fork()
        if pid == 0:
            control.close()
            die_with_parent(os.getppid())
            _job(events_fd, answers_fd)
        os.close(events_fd)
        os.close(answers_fd)
        control.send(json.dumps({"pid": pid}).encode())
        _, status = os.waitpid(pid, 0)
        kill_children()  # what the job left running (it could hold its pipes open, or keep computing)
        control.send(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())


def main() -> None:
    # The worker alone decides when a job stops (it kills the fork, and the job resumes from its last
    # epoch); a SIGINT or SIGTERM meant for the worker's whole group must not end us, or our forks, first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent_pid, control_fd = int(sys.argv[1]), int(sys.argv[2])
    die_with_parent(parent_pid)
    become_subreaper()
    for module in WARM_IMPORTS:  # the slow part (torch, the exporters), done once per worker
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    with socket.socket(fileno=control_fd) as control:
        serve(control)


if __name__ == "__main__":
    main()
