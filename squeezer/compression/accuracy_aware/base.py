"""The loop machinery both accuracy-aware modes share: validation, epochs, learning rate, checkpoints,
records, and saving/resuming the loop state (`state.py`). The modes (`early_exit.py`, `adaptive.py`)
only decide when to train, at which rate, and when to stop.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeezer.compression.accuracy_aware.divergence import LossWatch
from squeezer.compression.accuracy_aware.records import Checkpoints, EpochRecord, LoopStatistics
from squeezer.compression.accuracy_aware.state import apply_state, loop_state, read_state, write_state
from squeezer.compression.api import load_state
from squeezer.compression.config.models import AdaptiveCompressionConfig, EarlyExitConfig
from squeezer.compression.controller import CompressionController, CompressionStage
from squeezer.errors import CompressionError, TrainingDiverged

logger = logging.getLogger(__name__)


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


class TrainingLoop:
    """Shared runner: validation, epochs, learning rate, checkpoints, records, state."""

    mode = ""

    def __init__(
        self,
        section: EarlyExitConfig | AdaptiveCompressionConfig,
        ctrl: CompressionController,
        uncompressed_model_accuracy: float,
        *,
        lr_updates_needed: bool = True,
        verbose: bool = True,
        dump_checkpoints: bool = True,
        on_epoch_end: Callable[[EpochRecord], None] | None = None,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.params = section.params
        self.ctrl = ctrl
        self.uncompressed_accuracy = float(uncompressed_model_accuracy)
        p = self.params
        if p.maximal_absolute_accuracy_degradation is not None:
            self.minimal_tolerable_accuracy = self.uncompressed_accuracy - p.maximal_absolute_accuracy_degradation
        else:
            relative = p.maximal_relative_accuracy_degradation or 0.0
            self.minimal_tolerable_accuracy = self.uncompressed_accuracy * (1 - 0.01 * relative)
        self.lr_updates_needed = lr_updates_needed
        self.verbose = verbose
        self.dump_checkpoints = dump_checkpoints
        self.on_epoch_end = on_epoch_end
        self.state_path = Path(state_path) if state_path is not None else None
        self.checkpoints = Checkpoints()
        self.records: list[EpochRecord] = []
        self.statistics: LoopStatistics | None = None
        # counters and search position: everything `save_state` writes
        self.cumulative_epoch_count = 0
        self.training_epoch_count = 0
        self.best_val_metric_value = float("-inf")
        self.current_val_metric_value = float("-inf")
        self.current_loss: float | None = None
        self.loss_watch = LossWatch()
        self.diverged: TrainingDiverged | None = None  # set when training stopped on a diverging loss
        self.phase = "initial"
        self._resume: dict[str, Any] | None = None
        self._started = time.perf_counter()

    # ------------------------------------------------------------------ budget and rates
    def budget(self, metric: float) -> float:
        return metric - self.minimal_tolerable_accuracy

    def current_rate(self) -> float:
        rate = self.ctrl.compression_rate
        return float(rate) if rate is not None else 0.0

    def target_rate(self) -> float | None:
        return None

    # ------------------------------------------------------------------ primitives
    def _setup(
        self,
        model: nn.Module,
        train_epoch_fn: Callable[..., Any],
        validate_fn: Callable[..., Any],
        configure_optimizers_fn: Callable[[], Any] | None,
        early_stopping_fn: Callable[[float], bool] | None,
        update_learning_rate_fn: Callable[..., Any] | None,
        log_dir: str | None,
        dump_checkpoint_fn: Callable[..., Any] | None,
    ) -> None:
        self.model = model
        self.train_epoch_fn = train_epoch_fn
        self.validate_fn = validate_fn
        self.configure_optimizers_fn = configure_optimizers_fn
        self.early_stopping_fn = early_stopping_fn
        self.update_learning_rate_fn = update_learning_rate_fn
        self.dump_checkpoint_fn = dump_checkpoint_fn
        self.log_dir = Path(log_dir) if log_dir is not None else None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self.optimizers: list[Any] = []
        self.schedulers: list[Any] = []
        self.lr_factor = 1.0

    def configure_optimizers(self) -> None:
        if self.configure_optimizers_fn is None:
            self.optimizers, self.schedulers = [], []
            return
        result = self.configure_optimizers_fn()
        optimizers, schedulers = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
        self.optimizers, self.schedulers = _as_list(optimizers), _as_list(schedulers)

    def reset_training(self) -> None:
        """Fresh optimizers at the reduced learning rate; per-rate counters back to zero."""
        self.configure_optimizers()
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] *= self.lr_factor
        for sched in self.schedulers:
            if hasattr(sched, "base_lrs"):
                sched.base_lrs = [lr * self.lr_factor for lr in sched.base_lrs]
        self.training_epoch_count = 0
        self.best_val_metric_value = float("-inf")
        self.current_val_metric_value = float("-inf")

    def validate(self) -> float:
        with torch.no_grad():
            metric = float(self.validate_fn(self.model, epoch=self.cumulative_epoch_count))
        self.current_val_metric_value = metric
        self.best_val_metric_value = max(self.best_val_metric_value, metric)
        return metric

    def train_epoch(self) -> None:
        self.ctrl.scheduler.epoch_step()
        optimizer = self.optimizers[0] if len(self.optimizers) == 1 else self.optimizers
        scheduler = self.schedulers[0] if len(self.schedulers) == 1 else (self.schedulers or None)
        loss = self.train_epoch_fn(
            self.ctrl, self.model, epoch=self.cumulative_epoch_count, optimizer=optimizer, lr_scheduler=scheduler
        )
        self.current_loss = float(loss) if loss is not None else None
        self.training_epoch_count += 1
        self.cumulative_epoch_count += 1
        if self.current_loss is not None:
            self.loss_watch.check(self.current_loss, self.cumulative_epoch_count)

    def update_learning_rate(self) -> None:
        scheduler = self.schedulers[0] if len(self.schedulers) == 1 else self.schedulers
        if self.update_learning_rate_fn is not None:
            self.update_learning_rate_fn(
                scheduler, self.training_epoch_count, self.current_val_metric_value, self.current_loss
            )
        elif self.lr_updates_needed:
            for sched in self.schedulers:
                if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    sched.step(self.best_val_metric_value)
                else:
                    sched.step()

    def stop_training(self) -> bool:
        return (
            self.ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED
            and self.early_stopping_fn is not None
            and bool(self.early_stopping_fn(self.current_val_metric_value))
        )

    def _lr(self) -> float | None:
        return float(self.optimizers[0].param_groups[0]["lr"]) if self.optimizers else None

    def record_epoch(self) -> EpochRecord:
        """Offer the epoch as a checkpoint, report it, and save the loop state."""
        metric = self.current_val_metric_value
        stage = self.ctrl.compression_stage()
        rate = self.current_rate()
        fully = stage == CompressionStage.FULLY_COMPRESSED
        self.checkpoints.offer(
            self.model,
            self.cumulative_epoch_count,
            rate,
            metric,
            self.budget(metric),
            fully,
            self.ctrl.get_compression_state(),
        )
        record = EpochRecord(
            epoch=self.cumulative_epoch_count,
            phase=self.phase,
            compression_rate_target=self.target_rate(),
            compression_rate=self.ctrl.compression_rate,
            stage=stage.name,
            metric=metric,
            accuracy_budget=self.budget(metric),
            loss=self.current_loss,
            lr=self._lr(),
            wall_time_s=time.perf_counter() - self._started,
        )
        self.records.append(record)
        if self.verbose:
            logger.info(
                "epoch %d (%s): metric %.4f, budget %+.4f, rate %.4f, stage %s",
                record.epoch,
                record.phase,
                metric,
                record.accuracy_budget,
                rate,
                stage.name,
            )
        if self.dump_checkpoint_fn is not None and self.log_dir is not None:
            self.dump_checkpoint_fn(self.model, self.ctrl, self, str(self.log_dir))
        if self.on_epoch_end is not None:
            self.on_epoch_end(record)
        return record

    def end_of_epoch(self) -> None:
        """The point where the loop state is complete (LR stepped, search updated): save it."""
        if self.state_path is not None:
            self.save_state(self.state_path)

    def load_checkpoint(self, checkpoint: Any) -> None:
        load_state(self.model, checkpoint.state_dict, is_resume=True)
        self.ctrl.load_state(checkpoint.ctrl_state["ctrl_state"])

    def finish(self) -> nn.Module:
        """Load the best checkpoint (rule in Checkpoints) and fill `statistics` from it."""
        best = self.checkpoints.best()
        if best is None:
            raise CompressionError("the loop recorded no epoch; was maximal_total_epochs 0?")
        kind, checkpoint = best
        self.load_checkpoint(checkpoint)
        if kind != Checkpoints.KINDS[0]:
            logger.warning(
                "no fully compressed model met the accuracy budget; returning the %s checkpoint "
                "of epoch %d (rate %.4f, metric %.4f)",
                kind.replace("_", " "),
                checkpoint.epoch,
                checkpoint.rate,
                checkpoint.metric,
            )
        compressed = checkpoint.metric
        self.statistics = LoopStatistics(
            uncompressed_accuracy=self.uncompressed_accuracy,
            compressed_accuracy=compressed,
            compression_rate=checkpoint.rate,
            absolute_accuracy_degradation=self.uncompressed_accuracy - compressed,
            relative_accuracy_degradation=(
                100 * (1 - compressed / self.uncompressed_accuracy) if self.uncompressed_accuracy else 0.0
            ),
            accuracy_budget=self.budget(compressed),
            result=kind,
            epochs=self.cumulative_epoch_count,
            returned_epoch=checkpoint.epoch,
            diverged=str(self.diverged) if self.diverged is not None else None,
        )
        if self.verbose:
            logger.info("accuracy-aware training finished\n%s", self.statistics.to_str())
        return self.model

    def run(
        self,
        model: nn.Module,
        train_epoch_fn: Callable[..., Any],
        validate_fn: Callable[..., Any],
        configure_optimizers_fn: Callable[[], Any] | None = None,
        dump_checkpoint_fn: Callable[..., Any] | None = None,
        load_checkpoint_fn: Callable[..., Any] | None = None,
        early_stopping_fn: Callable[[float], bool] | None = None,
        tensorboard_writer: Any = None,
        log_dir: str | None = None,
        update_learning_rate_fn: Callable[..., Any] | None = None,
    ) -> nn.Module:
        """Train as the mode says; return the model loaded with the best checkpoint (see `finish`).

        NNCF's `load_checkpoint_fn` and `tensorboard_writer` are accepted and unused: checkpoints are
        kept by the loop, and the `on_epoch_end` records replace the tensorboard scalars.
        """
        del load_checkpoint_fn, tensorboard_writer
        self._setup(
            model,
            train_epoch_fn,
            validate_fn,
            configure_optimizers_fn,
            early_stopping_fn,
            update_learning_rate_fn,
            log_dir,
            dump_checkpoint_fn,
        )
        if self._resume is not None:
            self._restore()
        else:
            self.configure_optimizers()
            self.validate()
            self.record_epoch()
            self.end_of_epoch()
        try:
            self.train()
        except TrainingDiverged as exc:  # a result, not a crash: the checkpoints so far are still good
            self.diverged = exc
            logger.warning("%s; stopping and returning the best checkpoint of the epochs before it", exc)
        return self.finish()

    def train(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    def _search_state(self) -> dict[str, Any]:
        return {}

    def _load_search_state(self, state: dict[str, Any]) -> None:
        """Adaptive loops restore their search position here."""

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Everything needed to continue in a fresh process, written atomically."""
        write_state(loop_state(self), path)

    def load_state(self, path: str | os.PathLike[str]) -> None:
        """Resume from `save_state`; call before `run` (which then continues where the state ended)."""
        self._resume = read_state(path, self.mode)

    @property
    def has_saved_state(self) -> bool:
        return self._resume is not None

    def restore(
        self, model: nn.Module, configure_optimizers_fn: Callable[[], Any] | None = None, best: bool = False
    ) -> nn.Module:
        """`model` as the state from `load_state` left it (its last epoch), or loaded with the best checkpoint
        (`finish`'s rule, filling `statistics`), without training: what a run stopped between two saved
        epochs (a cancel, a deadline) keeps."""
        if self._resume is None:
            raise CompressionError("restore() needs load_state() first")

        def never(*_: Any, **__: Any) -> Any:
            raise CompressionError("a restored loop does not train")

        self._setup(model, never, never, configure_optimizers_fn, None, None, None, None)
        self._restore()
        return self.finish() if best else self.model

    def _restore(self) -> None:
        assert self._resume is not None
        apply_state(self, self._resume)
