"""A loop's resumable state: everything `TrainingLoop.save_state` writes after an epoch (counters, search
position, records, checkpoints, model, compression, optimizer and RNG states), and how a fresh process puts
it back. One place for the file's format, so that what is saved and what is restored cannot drift apart.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from squeezer.compression.accuracy_aware.records import EpochRecord
from squeezer.compression.api import load_state
from squeezer.errors import CompressionError

if TYPE_CHECKING:
    from squeezer.compression.accuracy_aware.base import TrainingLoop

STATE_VERSION = 1


def loop_state(loop: TrainingLoop) -> dict[str, Any]:
    """The loop's state as `torch.save` writes it (tensors and plain values only: `weights_only` reads it)."""
    return {
        "version": STATE_VERSION,
        "mode": loop.mode,
        "counters": {
            "cumulative": loop.cumulative_epoch_count,
            "training": loop.training_epoch_count,
            "best": loop.best_val_metric_value,
            "current": loop.current_val_metric_value,
            "loss": loop.current_loss,
            "phase": loop.phase,
            "lr_factor": loop.lr_factor,
        },
        "search": loop._search_state(),
        "records": [r.to_dict() for r in loop.records],
        "checkpoints": loop.checkpoints.to_dict(),
        "model": loop.model.state_dict(),
        "compression_state": loop.ctrl.get_compression_state(),
        "optimizers": [opt.state_dict() for opt in loop.optimizers],
        "schedulers": [s.state_dict() for s in loop.schedulers],
        "rng": {
            "torch": torch.get_rng_state(),
            "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0],
            "python_gauss": random.getstate()[2],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }


def write_state(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Written atomically: the previous state stays whole until the new one is complete."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_state(path: str | os.PathLike[str], mode: str) -> dict[str, Any]:
    """The state at `path`, refused unless a loop of `mode` wrote it."""
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("mode") != mode:
        raise CompressionError(f"{path} holds a {state.get('mode')!r} loop state, not {mode!r}")
    return state


def apply_state(loop: TrainingLoop, state: dict[str, Any]) -> None:
    """Put `state` back into a loop whose model, controller and optimizer factory are set up."""
    c = state["counters"]
    loop.cumulative_epoch_count, loop.training_epoch_count = c["cumulative"], c["training"]
    loop.best_val_metric_value, loop.current_val_metric_value = c["best"], c["current"]
    loop.current_loss, loop.phase, loop.lr_factor = c["loss"], c["phase"], c["lr_factor"]
    loop.records = [EpochRecord(**r) for r in state["records"]]
    loop.checkpoints.load(state["checkpoints"])
    load_state(loop.model, state["model"], is_resume=True)
    loop.ctrl.load_state(state["compression_state"]["ctrl_state"])
    loop._load_search_state(state["search"])
    loop.configure_optimizers()
    for opt, s in zip(loop.optimizers, state["optimizers"], strict=True):
        opt.load_state_dict(s)
    for sched, s in zip(loop.schedulers, state["schedulers"], strict=True):
        sched.load_state_dict(s)
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate((rng["python_version"], tuple(rng["python"]), rng["python_gauss"]))
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
