"""The job process: `python -m squeezer.worker.sandbox.child PARENT_PID EVENTS_FD`.

It starts with an environment that holds no credentials, dies with the worker that started it,
reads one `JobRequest` line from stdin, confines itself (`confine.py`) while it is still a single
thread, and only then imports torch and runs the job. Each epoch goes out as a JSON line on
EVENTS_FD and waits for the worker's answer on stdin ("continue" or "cancel"); the last line is
`done` or `failed`. Its log is `job.log` in its own folder, the only one it can write.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, BinaryIO, TextIO

PR_SET_PDEATHSIG = 1
WORKDIR_FILES = {  # output kind -> file name in the job's folder (the worker copies only these)
    "onnx": "model.onnx",
    "stripped": "stripped_model.safetensors",
    "checkpoint": "compression_checkpoint.pt",
    "original_graph": "original_graph.dot",
    "compressed_graph": "compressed_graph.dot",
    "log": "job.log",
}


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the worker died before the line above took effect
        os._exit(1)


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
    os.environ["TMPDIR"] = str(workdir / "tmp")
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


def main() -> None:
    parent_pid, events_fd = int(sys.argv[1]), int(sys.argv[2])
    _die_with_parent(parent_pid)
    channel = Channel(os.fdopen(events_fd, "wb"), sys.stdin)
    run(sys.stdin.readline(), channel)


if __name__ == "__main__":
    main()
