"""Early Exit and Adaptive Compression Level training loops.

Both follow NNCF's algorithm; the differences are deliberate: the returned model is the best
fully compressed checkpoint within the accuracy budget (else the best partially compressed one
within it, else the best one, and `statistics.result` says which); the reported compression rate
is the returned model's; no state is lost when nothing qualified; and the whole loop state can be
saved after any epoch and resumed in a fresh process.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeezer.compression import registry
from squeezer.compression.accuracy_aware.divergence import LossWatch
from squeezer.compression.accuracy_aware.records import Checkpoints, EpochRecord, LoopStatistics
from squeezer.compression.api import load_state
from squeezer.compression.config.models import (
    AdaptiveCompressionConfig,
    AdaptiveCompressionParams,
    EarlyExitConfig,
    EarlyExitParams,
)
from squeezer.compression.config.nncf_config import NNCFConfig
from squeezer.compression.controller import CompositeController, CompressionController, CompressionStage
from squeezer.errors import CompressionError, ConfigError, TrainingDiverged

logger = logging.getLogger(__name__)
STATE_VERSION = 1


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
        state = {
            "version": STATE_VERSION,
            "mode": self.mode,
            "counters": {
                "cumulative": self.cumulative_epoch_count,
                "training": self.training_epoch_count,
                "best": self.best_val_metric_value,
                "current": self.current_val_metric_value,
                "loss": self.current_loss,
                "phase": self.phase,
                "lr_factor": self.lr_factor,
            },
            "search": self._search_state(),
            "records": [r.to_dict() for r in self.records],
            "checkpoints": self.checkpoints.to_dict(),
            "model": self.model.state_dict(),
            "compression_state": self.ctrl.get_compression_state(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "rng": {
                "torch": torch.get_rng_state(),
                "python": list(random.getstate()[1]),
                "python_version": random.getstate()[0],
                "python_gauss": random.getstate()[2],
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)  # the previous state stays whole until the new one is complete
        finally:
            tmp.unlink(missing_ok=True)

    def load_state(self, path: str | os.PathLike[str]) -> None:
        """Resume from `save_state`; call before `run` (which then continues where the state ended)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("mode") != self.mode:
            raise CompressionError(f"{path} holds a {state.get('mode')!r} loop state, not {self.mode!r}")
        self._resume = state

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
        state = self._resume
        assert state is not None
        c = state["counters"]
        self.cumulative_epoch_count, self.training_epoch_count = c["cumulative"], c["training"]
        self.best_val_metric_value, self.current_val_metric_value = c["best"], c["current"]
        self.current_loss, self.phase, self.lr_factor = c["loss"], c["phase"], c["lr_factor"]
        self.records = [EpochRecord(**r) for r in state["records"]]
        self.checkpoints.load(state["checkpoints"])
        load_state(self.model, state["model"], is_resume=True)
        self.ctrl.load_state(state["compression_state"]["ctrl_state"])
        self._load_search_state(state["search"])
        self.configure_optimizers()
        for opt, s in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(s)
        for sched, s in zip(self.schedulers, state["schedulers"], strict=True):
            sched.load_state_dict(s)
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate((rng["python_version"], tuple(rng["python"]), rng["python_gauss"]))
        if rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])


class EarlyExitLoop(TrainingLoop):
    """Train with the user's schedule; stop at the first fully compressed epoch within the budget."""

    mode = "early_exit"

    def train(self) -> None:
        self.early_exit_phase(self.params.maximal_total_epochs)

    def criterion_met(self) -> bool:
        return (
            self.budget(self.current_val_metric_value) >= 0
            and self.ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED
        )

    def early_exit_phase(self, max_epochs: int) -> None:
        while not self.criterion_met() and self.cumulative_epoch_count < max_epochs:
            self.train_epoch()
            self.validate()
            self.record_epoch()
            if self.criterion_met():
                logger.info("reached the accuracy criterion after epoch %d", self.cumulative_epoch_count)
            elif self.stop_training():
                logger.info("training stopped: early stopping criterion satisfied")
                self.end_of_epoch()
                break
            else:
                self.update_learning_rate()
            self.end_of_epoch()


class FixedEpochsLoop(EarlyExitLoop):
    """Plain fine-tuning for `epochs` epochs with the same records, checkpoints and resumable state.

    The budget is "no worse than uncompressed", so `statistics.result` tells whether it was matched;
    the returned model follows the same rule as the other loops.
    """

    def __init__(
        self, epochs: int, ctrl: CompressionController, uncompressed_model_accuracy: float, **options: Any
    ) -> None:
        section = EarlyExitConfig(
            mode="early_exit",
            params=EarlyExitParams(maximal_absolute_accuracy_degradation=0.0, maximal_total_epochs=epochs),
        )
        super().__init__(section, ctrl, uncompressed_model_accuracy, **options)

    def criterion_met(self) -> bool:
        return False


class AdaptiveCompressionLoop(EarlyExitLoop):
    """Phase 1: early exit with the user's schedule; phase 2: search the highest rate within the budget."""

    mode = "adaptive_compression_level"

    def __init__(
        self,
        section: AdaptiveCompressionConfig,
        ctrl: CompressionController,
        uncompressed_model_accuracy: float,
        *,
        minimal_compression_rate: float = 0.0,
        maximal_compression_rate: float = 0.95,
        **options: Any,
    ) -> None:
        super().__init__(section, ctrl, uncompressed_model_accuracy, **options)
        self.adaptive_params: AdaptiveCompressionParams = section.params
        self.adaptive_ctrl = self._find_adaptive(ctrl)
        logger.info("adaptive compression level: searching the rate of %s", self.adaptive_ctrl.name)
        self.minimal_compression_rate = minimal_compression_rate
        self.maximal_compression_rate = min(maximal_compression_rate, self.adaptive_ctrl.maximal_compression_rate)
        self.step = section.params.initial_compression_rate_step
        self.target: float | None = None
        self.was_increased: bool | None = None
        self.force = True

    @staticmethod
    def _find_adaptive(ctrl: CompressionController) -> CompressionController:
        children = ctrl.children if isinstance(ctrl, CompositeController) else [ctrl]
        names = [c.name for c in children]
        families = {registry.ALGORITHMS[n].family for n in names if n in registry.ALGORITHMS}
        if {"pruning", "sparsity"} <= families:
            raise ConfigError(
                "adaptive_compression_level searches one rate: use filter_pruning or a sparsity "
                "algorithm, not both (either may be combined with quantization)",
                path="$.accuracy_aware_training.mode",
            )
        found = next((c for c in children if c.name in registry.ADAPTIVE_ALGORITHMS), None)
        if found is None:
            raise ConfigError(
                f"adaptive_compression_level needs one of {list(registry.ADAPTIVE_ALGORITHMS)} in compression; "
                f"the config has {names}",
                path="$.accuracy_aware_training.mode",
            )
        return found

    def target_rate(self) -> float | None:
        return self.target

    def current_rate(self) -> float:
        rate = self.adaptive_ctrl.compression_rate
        return float(rate) if rate is not None else 0.0

    def train(self) -> None:
        if self.phase == "initial":  # its epochs count towards maximal_total_epochs like any other
            params = self.adaptive_params
            self.early_exit_phase(min(params.initial_training_phase_epochs, params.maximal_total_epochs))
            self.phase = "search"
            best = self.checkpoints.best_within_budget()
            if best is not None:
                self.load_checkpoint(best)
            self.reset_training()
            self.validate()
            self.ctrl.disable_scheduler()
        self.search()

    def update_target(self) -> bool:
        """NNCF's uniform step search: up while the best metric at this rate is within budget, down after
        `patience_epochs` without; the step (and the learning rate) shrink whenever the direction flips."""
        params = self.adaptive_params
        best_budget = self.budget(self.best_val_metric_value)
        if not (self.training_epoch_count >= params.patience_epochs or best_budget >= 0 or self.force):
            return False
        increase = best_budget >= 0
        if self.was_increased is not None and self.was_increased != increase:
            self.step *= params.compression_rate_step_reduction_factor
            self.lr_factor *= params.lr_reduction_factor or 1.0
        base = self.target if self.target is not None else self.current_rate()
        self.target = base + (self.step if increase else -self.step)
        self.was_increased = increase
        return True

    def search(self) -> None:
        params = self.adaptive_params
        while (
            self.step >= params.minimal_compression_rate_step
            and self.cumulative_epoch_count < params.maximal_total_epochs
        ):
            if self.update_target():
                assert self.target is not None
                if self.target < self.minimal_compression_rate:
                    logger.warning("cannot produce a compressed model within the accuracy budget")
                    break
                if self.target > self.maximal_compression_rate:
                    self.target = self.maximal_compression_rate
                    logger.info("reached the maximal compression rate %.4f", self.target)
                    break
                self.force = False
                best = self.checkpoints.best_within_budget()
                if best is not None:
                    self.load_checkpoint(best)
                self.adaptive_ctrl.compression_rate = self.target
                self.reset_training()
                self._pin_stub_scheduler()
                logger.info("target compression rate %.4f (step %.4f)", self.target, self.step)
            self.train_epoch()
            self.validate()
            self.record_epoch()
            if self.stop_training():
                self.force = True
            self.update_learning_rate()
            self.end_of_epoch()

    def _pin_stub_scheduler(self) -> None:
        """After `disable_scheduler` the stub reports the searched rate as the target level."""
        for attr in ("current_sparsity_level", "current_pruning_level", "target_level"):
            setattr(self.adaptive_ctrl.scheduler, attr, self.target)

    def _search_state(self) -> dict[str, Any]:
        return {"step": self.step, "target": self.target, "was_increased": self.was_increased, "force": self.force}

    def _load_search_state(self, state: dict[str, Any]) -> None:
        self.step, self.target = state["step"], state["target"]
        self.was_increased, self.force = state["was_increased"], state["force"]
        if self.phase == "search":
            self.ctrl.disable_scheduler()
            if self.target is not None:
                self._pin_stub_scheduler()


def create_accuracy_aware_training_loop(
    nncf_config: NNCFConfig, compression_ctrl: CompressionController, uncompressed_model_accuracy: float, **options: Any
) -> TrainingLoop:
    """The loop the config's `accuracy_aware_training.mode` names (NNCF's entry point).

    Options: `on_epoch_end(record)` callback, `state_path` (loop state saved after every epoch),
    `lr_updates_needed`, `verbose`, `dump_checkpoints`; adaptive only: `minimal_compression_rate`,
    `maximal_compression_rate`.
    """
    section = nncf_config.model.accuracy_aware_training
    if section is None:
        raise ConfigError("the config has no accuracy_aware_training section", path="$.accuracy_aware_training")
    if isinstance(section, EarlyExitConfig):
        options.pop("minimal_compression_rate", None)
        options.pop("maximal_compression_rate", None)
        return EarlyExitLoop(section, compression_ctrl, uncompressed_model_accuracy, **options)
    return AdaptiveCompressionLoop(section, compression_ctrl, uncompressed_model_accuracy, **options)
