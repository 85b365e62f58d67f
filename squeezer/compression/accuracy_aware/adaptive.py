"""Adaptive Compression Level: Early Exit first, then NNCF's step search for the highest compression rate
whose metric stays within the accuracy budget (its position is part of the saved loop state).
"""

from __future__ import annotations

import logging
from typing import Any

from squeezer.compression import registry
from squeezer.compression.accuracy_aware.early_exit import EarlyExitLoop
from squeezer.compression.config.models import AdaptiveCompressionConfig, AdaptiveCompressionParams
from squeezer.compression.controller import CompositeController, CompressionController
from squeezer.errors import ConfigError

logger = logging.getLogger(__name__)


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
