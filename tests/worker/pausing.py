"""Job targets that pause at a chosen training batch, so that a test stops a worker exactly mid-epoch
(not after a guessed time). Imported inside the job process, or by the job process server through
`pause_hook` (a `sitecustomize` for a whole service started by a test)."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading
import time
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

TRAIN_SAMPLES, BATCH_SIZE = 1200, 64  # `write_digits_job_files`' train split, and the recipes that use this
BATCHES_PER_EPOCH = -(-TRAIN_SAMPLES // BATCH_SIZE)  # the last batch is a short one
MID_EPOCH_3 = 2 * BATCHES_PER_EPOCH + BATCHES_PER_EPOCH // 2  # epochs 1 and 2 trained, half of epoch 3

# the resume scenario's job (tests/worker/test_stop.py, tests/service/test_worker_crash.py and
# test_worker_stop_compose.py): stopped half into epoch 3, then resumed; conftest's `uninterrupted_job`
# runs it once without a stop, as their common reference
RESUME_CONFIG: dict[str, Any] = {"compression": {"algorithm": "quantization"}}
RESUME_RECIPE: dict[str, Any] = {"epochs": 5, "batch_size": BATCH_SIZE, "lr": 1e-3, "seed": 3}


def marker(batch: int) -> str:
    return f"paused-at-batch-{batch}"


def wait_for_file(path: Path, process: Any) -> None:
    """Until the paused job process writes `path` (while `process`, a Popen that runs it, is alive)."""
    deadline = time.monotonic() + 300
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"the job never reached {path.name}"


def pause_at_batch(training: ModuleType, batch: int) -> None:
    """This process's `batch`-th training batch writes `marker(batch)` in the current folder (a job's
    own) and then waits forever, to be killed. It counts the calls of the training job's loss."""
    loss = training.task_loss
    calls = 0

    def counting(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == batch:
            Path(marker(batch)).touch()
            threading.Event().wait()
        return loss(*args)

    training.task_loss = counting


def run_job_paused_mid_epoch_3(**arguments: Any) -> Any:
    from squeezer.worker import runner, training

    pause_at_batch(training, MID_EPOCH_3)
    return runner.run_job(**arguments)


def run_job_paused_in_epoch_1(**arguments: Any) -> Any:
    from squeezer.worker import runner, training

    pause_at_batch(training, BATCHES_PER_EPOCH // 2)
    return runner.run_job(**arguments)


class _PauseWhenImported(importlib.abc.MetaPathFinder):
    """Wraps the training job's loss as `worker/training.py` is imported (the job process server imports it at start)."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != "squeezer.worker.training":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.loader is not None
        exec_module = spec.loader.exec_module

        def exec_then_pause(module: ModuleType) -> None:
            exec_module(module)
            pause_at_batch(module, self.batch)

        spec.loader.exec_module = exec_then_pause  # type: ignore[method-assign]
        return spec


def pause_hook(folder: Path, batch: int) -> Path:
    """A folder with a `sitecustomize` that makes every job process of a service started with it on
    PYTHONPATH pause at its `batch`-th training batch (`PYTHONPATH` is among what a job process inherits)."""
    folder.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[2]
    (folder / "sitecustomize.py").write_text(
        f"import sys\nsys.path.append({str(repo)!r})\n"
        f"from tests.worker.pausing import _PauseWhenImported\n"
        f"sys.meta_path.insert(0, _PauseWhenImported({batch}))\n"
    )
    return folder
