"""A storage write fails for real (the kernel's file-size limit, in a child process): the job's error
names the full disk, and the checkpoint saved before it is intact and still loads."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import torch

from squeezer.worker.failures import failure_reason

CHILD = r"""
import json, resource, signal, sys
from pathlib import Path
from squeezer.recipe import Recipe
from squeezer.worker.failures import failure_reason
from squeezer.worker.runner import run_job

root, work = Path(sys.argv[1]), Path(sys.argv[2])
files = {n: root / f for n, f in (("model", "m.pt2"), ("train", "train.npz"), ("val", "val.npz"))}
config = {"compression": {"algorithm": "quantization"}}
if sys.argv[3] == "first":
    run_job(files["model"], config, files["train"], files["val"], Recipe(epochs=1), work)
    sys.exit(0)
limit = (work / "loop_state.pt").stat().st_size // 2  # smaller than the next state: its write fails
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    run_job(files["model"], config, files["train"], files["val"], Recipe(epochs=3), work)
except Exception as exc:
    print(json.dumps({"reason": failure_reason(exc)}))
"""


def test_a_failed_checkpoint_write_is_named_and_the_previous_one_survives(tmp_path):
    from tests.helpers import write_digits_job_files

    write_digits_job_files(tmp_path)
    work = tmp_path / "work"
    run = [sys.executable, "-c", CHILD, str(tmp_path), str(work)]
    assert subprocess.run([*run, "first"], capture_output=True, timeout=300).returncode == 0
    state = work / "loop_state.pt"
    before = hashlib.sha256(state.read_bytes()).hexdigest()

    # the second run resumes after epoch 1 and must write a new state after epoch 2: the write fails
    result = subprocess.run([*run, "second"], capture_output=True, text=True, timeout=300)
    reason = json.loads(result.stdout.strip().splitlines()[-1])["reason"]
    assert reason.startswith("storage full") and "the last checkpoint included, are intact" in reason
    assert hashlib.sha256(state.read_bytes()).hexdigest() == before  # untouched by the failed write
    assert not state.with_suffix(".pt.tmp").exists()  # and no half-written file left behind
    saved = torch.load(state, weights_only=True)
    assert [r["epoch"] for r in saved["records"]] == [0, 1]  # still a whole, loadable state


def test_other_failures_keep_their_type_in_the_reason():
    assert failure_reason(ValueError("bad")) == "ValueError: bad"
    assert failure_reason(OSError(28, "No space left on device", "/data/x")).startswith("storage full writing /data/x")
