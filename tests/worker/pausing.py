"""Job targets that pause at a chosen training batch, so that a test stops a worker exactly mid-epoch
(not after a guessed time). Imported inside the job process, or by the job process server through
`tests/service/pause_hook/`."""

from __future__ import annotations

import threading
from pathlib import Path
from types import ModuleType
from typing import Any

TRAIN_SAMPLES, BATCH_SIZE = 1200, 64  # `write_digits_job_files`' train split, and the recipes that use this
BATCHES_PER_EPOCH = -(-TRAIN_SAMPLES // BATCH_SIZE)  # the last batch is a short one
MID_EPOCH_3 = 2 * BATCHES_PER_EPOCH + BATCHES_PER_EPOCH // 2  # epochs 1 and 2 trained, half of epoch 3


def marker(batch: int) -> str:
    return f"paused-at-batch-{batch}"


def pause_at_batch(runner: ModuleType, batch: int) -> None:
    """This process's `batch`-th training batch writes `marker(batch)` in the current folder (a job's
    own) and then waits forever, to be killed. It counts the calls of the runner's loss."""
    loss = runner._loss
    calls = 0

    def counting(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == batch:
            Path(marker(batch)).touch()
            threading.Event().wait()
        return loss(*args)

    runner._loss = counting


def run_job_paused_mid_epoch_3(**arguments: Any) -> Any:
    from squeezer.worker import runner

    pause_at_batch(runner, MID_EPOCH_3)
    return runner.run_job(**arguments)
