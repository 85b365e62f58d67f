"""Pruning level schedules: exponential, exponential_with_bias, baseline."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from scipy.optimize import brentq

from squeezer.compression.config.models import FilterPruningParams
from squeezer.compression.controller import CompressionScheduler

if TYPE_CHECKING:
    from squeezer.compression.pruning.algorithm import FilterPruningController


class PruningScheduler(CompressionScheduler):
    """`epoch_step()` sets the level for the new epoch; masks freeze after the schedule ends."""

    def __init__(
        self, ctrl: FilterPruningController, params: FilterPruningParams, initial: float, target: float
    ) -> None:
        super().__init__()
        self.ctrl = ctrl
        self.initial = initial
        self.target_level = target
        self.warmup = params.num_init_steps
        self.steps = params.pruning_steps
        self.kind = params.schedule
        self.freeze_epoch = self.warmup + (0 if self.kind == "baseline" else self.steps)
        self._bias_params = self._solve_bias() if self.kind == "exponential_with_bias" else None

    def _solve_bias(self) -> tuple[float, float, float]:
        """a, b, k with initial = a + b, target = a e^{-kT} + b, 0.75 target = a e^{-kT/8} + b."""
        t_end = max(self.steps - 1, 1)
        p0, p1 = self.initial, self.target_level

        def residual(k: float) -> float:
            a = (p0 - p1) / (1 - math.exp(-k * t_end))
            b = p0 - a
            return a * math.exp(-k * t_end / 8) + b - 0.75 * p1

        if p0 == p1:
            return 0.0, p0, 1.0
        k = brentq(residual, 1e-6, 50.0)
        a = (p0 - p1) / (1 - math.exp(-k * t_end))
        return a, p0 - a, k

    def level_at(self, epoch: int) -> float:
        if epoch < 0:
            return self.initial
        if epoch < self.warmup:
            return 0.0
        e = epoch - self.warmup
        if self.kind == "baseline":
            return self.target_level
        t_end = self.steps - 1
        if t_end <= 0:
            return self.target_level
        if self.kind == "exponential":
            d0, dt = 1 - self.initial, 1 - self.target_level
            density = max(d0 * (dt / d0) ** (e / t_end), dt)
            return min(1 - density, self.target_level)
        assert self._bias_params is not None
        a, b, k = self._bias_params
        return min(a * math.exp(-k * e) + b, self.target_level)

    @property
    def current_pruning_level(self) -> float:
        return self.level_at(self.current_epoch)

    def epoch_step(self, next_epoch: int | None = None) -> None:
        super().epoch_step(next_epoch)
        self.ctrl.set_pruning_level(self.current_pruning_level)
        if self.current_epoch >= self.freeze_epoch:
            self.ctrl.freeze()

    def get_state(self) -> dict[str, Any]:
        return super().get_state()
