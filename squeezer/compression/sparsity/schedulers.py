"""Sparsity level schedules: polynomial, exponential, multistep, adaptive."""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any

from squeezer.compression.config.models import SparsityParams
from squeezer.compression.controller import CompressionScheduler
from squeezer.errors import ConfigError

if TYPE_CHECKING:
    from squeezer.compression.sparsity.base import SparsityController

ADAPTIVE_STEP = 0.05
ADAPTIVE_EPS = 0.03


class SparsityScheduler(CompressionScheduler):
    """Sets the controller's level from the epoch; freezes masks from `sparsity_freeze_epoch` on."""

    def __init__(self, ctrl: SparsityController, params: SparsityParams, initial: float) -> None:
        super().__init__()
        self.ctrl = ctrl
        self.initial = initial
        self.target_level = params.sparsity_target
        self.target_epoch = params.sparsity_target_epoch
        self.freeze_epoch = params.sparsity_freeze_epoch

    @property
    def current_sparsity_level(self) -> float:
        if self.current_epoch < 0:
            return self.initial
        return self.level_at(float(self.current_epoch))

    def level_at(self, t: float) -> float:
        raise NotImplementedError

    def epoch_step(self, next_epoch: int | None = None) -> None:
        super().epoch_step(next_epoch)
        self._update()

    def _update(self) -> None:
        # The level of the freeze epoch is applied before masks freeze; NNCF freezes first, so the
        # level scheduled for that epoch never reaches the masks (an NNCF quirk, not copied).
        self.ctrl.set_sparsity_level(self.current_sparsity_level)
        if self.current_epoch >= self.freeze_epoch and not self.ctrl.frozen:
            self.ctrl.freeze()


class PolynomialScheduler(SparsityScheduler):
    def __init__(self, ctrl: SparsityController, params: SparsityParams, initial: float) -> None:
        super().__init__(ctrl, params, initial)
        self.power = params.power
        self.concave = params.concave
        self.per_step = params.update_per_optimizer_step
        self.steps_per_epoch = params.steps_per_epoch
        self._steps_in_epoch = 0

    def level_at(self, t: float) -> float:
        if self.target_epoch == 0:
            return self.target_level
        progress = min(max(t / self.target_epoch, 0.0), 1.0)
        if self.concave:
            return self.target_level - (self.target_level - self.initial) * (1 - progress) ** self.power
        return self.initial + (self.target_level - self.initial) * progress**self.power

    @property
    def current_sparsity_level(self) -> float:
        if self.current_epoch < 0:
            return self.initial
        t = float(self.current_epoch)
        if self.per_step and self.steps_per_epoch:
            t += max(self._steps_in_epoch - 1, 0) / self.steps_per_epoch
        return self.level_at(t)

    def epoch_step(self, next_epoch: int | None = None) -> None:
        if self.per_step and self.steps_per_epoch is None and self.current_epoch == 0:
            # no steps_per_epoch configured: the first epoch counted them (it ran at epoch-level updates)
            self.steps_per_epoch = max(self._steps_in_epoch, 1)
        self._steps_in_epoch = 0
        super().epoch_step(next_epoch)

    def step(self, next_step: int | None = None) -> None:
        super().step(next_step)
        self._steps_in_epoch += 1
        if self.per_step and self.steps_per_epoch and self.current_epoch >= 0:
            self._update()

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "_steps_per_epoch": self.steps_per_epoch}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.steps_per_epoch = state.get("_steps_per_epoch", self.steps_per_epoch)


class ExponentialScheduler(SparsityScheduler):
    """Density decays geometrically from 1 - initial to 1 - target over `sparsity_target_epoch` epochs."""

    def level_at(self, t: float) -> float:
        if self.target_epoch == 0:
            return self.target_level
        d0, dt = 1 - self.initial, 1 - self.target_level
        density = max(d0 * (dt / d0) ** (t / self.target_epoch), dt)
        return min(1 - density, self.target_level)


class MultiStepScheduler(SparsityScheduler):
    def __init__(self, ctrl: SparsityController, params: SparsityParams, initial: float) -> None:
        super().__init__(ctrl, params, initial)
        self.boundaries = sorted(params.multistep_steps)
        self.values = list(params.multistep_sparsity_levels)
        self.target_level = self.values[-1]

    def level_at(self, t: float) -> float:
        return self.values[bisect.bisect_right(self.boundaries, t)]


class AdaptiveScheduler(SparsityScheduler):
    """Raises the level by 0.05 after `patience` epochs in which the model reached the current level."""

    def __init__(self, ctrl: SparsityController, params: SparsityParams, initial: float) -> None:
        super().__init__(ctrl, params, initial)
        self.patience = params.patience
        self.level = initial
        self.num_bad_epochs = 0

    @property
    def current_sparsity_level(self) -> float:
        return self.level

    def epoch_step(self, next_epoch: int | None = None) -> None:
        CompressionScheduler.epoch_step(self, next_epoch)
        if self.ctrl.measured_sparsity_level() >= self.level - ADAPTIVE_EPS:
            self.num_bad_epochs += 1
        if self.num_bad_epochs >= self.patience:
            self.num_bad_epochs = 0
            self.level += ADAPTIVE_STEP
        self.level = min(self.level, self.target_level)
        self._update()

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "num_bad_epochs": self.num_bad_epochs, "current_sparsity_level": self.level}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.num_bad_epochs = state.get("num_bad_epochs", 0)
        self.level = state.get("current_sparsity_level", self.level)


SCHEDULERS: dict[str, type[SparsityScheduler]] = {
    "polynomial": PolynomialScheduler,
    "exponential": ExponentialScheduler,
    "multistep": MultiStepScheduler,
    "adaptive": AdaptiveScheduler,
}


def make_scheduler(ctrl: SparsityController, params: SparsityParams, initial: float, default: str) -> SparsityScheduler:
    kind = params.schedule or default
    if kind not in SCHEDULERS:
        raise ConfigError(f"unknown schedule {kind!r}; allowed: {sorted(SCHEDULERS)}", path="$.compression.params")
    return SCHEDULERS[kind](ctrl, params, initial)
