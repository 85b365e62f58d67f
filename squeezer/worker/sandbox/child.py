"""The job process: `python -m squeezer.worker.sandbox.child PARENT_PID EVENTS_FD`.

It starts with an environment that holds no credentials and dies with the worker that started it.
It imports torch and the runner first (a worker starts the next job's process in advance, so this
happens while the worker waits), then reads one `JobRequest` line from stdin and forks: the fork is
single-threaded, which Landlock needs (it restricts the calling thread and what it starts later,
and imports have started BLAS threads by then). The fork confines itself (`confine.py`), runs the
job, and the first process exits as the fork did.

Each epoch goes out as a JSON line on EVENTS_FD and waits for the worker's answer on stdin
("continue" or "cancel"); the last line is `done` or `failed`. The job's log is `job.log` in its
own folder, the only one it can write.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from squeezer.worker.lifetime import die_with_parent

WARM_IMPORTS = (
    "squeezer.worker.runner",
    "squeezer.compression.export",
    "torch.onnx",
    "onnx",
    "onnxruntime",
    "safetensors.torch",
    "squeezer.worker.sandbox.confine",
    "squeezer.worker.sandbox.protocol",
    "squeezer.worker.failures",
)
WORKDIR_FILES = {  # output kind -> file name in the job's folder (the worker copies only these)
    "onnx": "model.onnx",
    "stripped": "stripped_model.safetensors",
    "checkpoint": "compression_checkpoint.pt",
    "original_graph": "original_graph.dot",
    "compressed_graph": "compressed_graph.dot",
    "log": "job.log",
}


class Channel:
    """JSON lines out on the events pipe; one-word answers in on stdin."""

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
    sys.path[:0] = request.import_paths
    if request.confine:
        from squeezer.worker.sandbox.confine import confine

        confine([*request.readable, *request.import_paths], [workdir])
    _job_log(workdir)
    log = logging.getLogger("squeezer.worker.job")
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
        channel.send({"type": "failed", "input_error": False, "reason": failure_reason(exc)})
        return
    channel.send(
        {
            "type": "done",
            "status": result.status,
            "uncompressed_metric": result.uncompressed_metric,
            "metric": result.metric,
            "compression_rate": result.compression_rate,
            "statistics": result.statistics,
            "outputs": sorted(k for k, name in WORKDIR_FILES.items() if (workdir / name).is_file()),
        }
    )


def _exit_as(status: int) -> None:
    """Exit the way the fork did, so that the worker sees its exit code or its signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig != signal.SIGKILL:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status))


def main() -> None:
    parent_pid, events_fd = int(sys.argv[1]), int(sys.argv[2])
    die_with_parent(parent_pid)
    # the slow part (torch, the exporters), done before the job comes
    for module in WARM_IMPORTS:
        importlib.import_module(module)

    request = sys.stdin.readline()
    if not request:  # the worker is gone or no longer needs us
        return
    pid = os.fork()
    if pid:
        os.close(events_fd)
        _exit_as(os.waitpid(pid, 0)[1])
    die_with_parent(os.getppid())
    try:
        run(request, Channel(os.fdopen(events_fd, "wb"), sys.stdin))
        status = 0
    except BaseException:
        traceback.print_exc()
        status = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
