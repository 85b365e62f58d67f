"""Magnitude sparsity: zero the globally least important weights at the scheduled level."""

from __future__ import annotations

import torch
from torch import nn

from squeezer.compression.build import BuildContext
from squeezer.compression.config.models import MagnitudeSparsityConfig
from squeezer.compression.controller import StubScheduler
from squeezer.compression.graph.surgery import original_weight
from squeezer.compression.registry import name_of, register_algorithm
from squeezer.compression.sparsity.base import SparsityController, attach_masks, weight_importance
from squeezer.compression.sparsity.masks import BinaryMask, Mask
from squeezer.compression.sparsity.schedulers import make_scheduler
from squeezer.compression.targets import Layer


class MagnitudeSparsityController(SparsityController):
    name = name_of(MagnitudeSparsityConfig)

    def __init__(
        self,
        model: nn.Module,
        ctx: BuildContext,
        section: MagnitudeSparsityConfig,
        layers: list[tuple[Layer, nn.Module, Mask]],
    ) -> None:
        super().__init__(model, ctx, section, layers)
        self.importance = section.params.weight_importance
        if self.global_mode:
            self._scheduler = make_scheduler(self, section.params, section.sparsity_init, "polynomial")
        else:
            self._scheduler = StubScheduler()
        if ctx.should_init:
            self.set_sparsity_level(section.sparsity_init)

    def set_sparsity_level(self, level: float) -> None:
        """One threshold over all layers: weights at or below the `level` quantile of importance are zeroed.

        At level 0 nothing is masked (NNCF masks the single smallest weight there: a quirk not copied).
        """
        if not 0.0 <= level < 1.0:
            raise ValueError(f"sparsity level must be in [0, 1), got {level}")
        self.level = level
        if self.frozen:
            return
        importances = [weight_importance(original_weight(m), self.importance) for _, m, _ in self.layers]
        if not importances:
            return
        if level == 0.0:
            for _, _, mask in self.layers:
                mask.set_mask(torch.ones_like(mask.mask))
            return
        flat = torch.cat([imp.flatten() for imp in importances])
        threshold = flat.kthvalue(max(1, int((flat.numel() - 1) * level) + 1)).values
        for (_, _, mask), imp in zip(self.layers, importances, strict=True):
            mask.set_mask((imp > threshold).to(mask.mask.dtype))


@register_algorithm(MagnitudeSparsityConfig)
def build_magnitude_sparsity(ctx: BuildContext, section: MagnitudeSparsityConfig) -> MagnitudeSparsityController:
    layers = attach_masks(ctx, section, section.algorithm, BinaryMask)
    return MagnitudeSparsityController(ctx.model, ctx, section, layers)
