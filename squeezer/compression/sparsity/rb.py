"""Regularization-based sparsity: trainable mask logits pushed to a target density by a loss."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from squeezer.compression.build import BuildContext
from squeezer.compression.config.models import RBSparsityConfig
from squeezer.compression.controller import Statistics, StubScheduler
from squeezer.compression.registry import name_of, register_algorithm
from squeezer.compression.sparsity.base import SparsityController, attach_masks
from squeezer.compression.sparsity.masks import Mask, RBMask
from squeezer.compression.sparsity.schedulers import make_scheduler
from squeezer.compression.targets import Layer

RB_LOSS_P = 0.05


class RBSparsityController(SparsityController):
    name = name_of(RBSparsityConfig)

    def __init__(
        self,
        model: nn.Module,
        ctx: BuildContext,
        section: RBSparsityConfig,
        layers: list[tuple[Layer, nn.Module, Mask]],
    ) -> None:
        super().__init__(model, ctx, section, layers)
        multiplier = section.compression_lr_multiplier or ctx.cfg.compression_lr_multiplier
        self.masks = [cast(RBMask, mask) for _, _, mask in layers]
        if multiplier is not None:
            for mask in self.masks:
                mask._mask.register_hook(lambda g, m=multiplier: g * m)
        self.level = section.sparsity_init
        self.mean_sparse_prob = 0.0
        if self.global_mode:
            self._scheduler = make_scheduler(self, section.params, section.sparsity_init, "exponential")
        else:
            self._scheduler = StubScheduler()

    def set_sparsity_level(self, level: float) -> None:
        """Only the loss target moves; the logits follow through training."""
        if not 0.0 <= level < 1.0:
            raise ValueError(f"sparsity level must be in [0, 1), got {level}")
        self.level = level

    def loss(self) -> torch.Tensor:
        """((density - target density) / 0.05)^2 over the masks; zero once frozen."""
        if self.frozen or not self.layers:
            return super().loss()
        kept = torch.stack([m._hard(m.probabilities()).sum() for m in self.masks]).sum()
        total = sum(m._mask.numel() for m in self.masks)
        with torch.no_grad():
            self.mean_sparse_prob = (
                1.0 - float(torch.stack([m.probabilities().sum() for m in self.masks]).sum()) / total
            )
        density = kept / total
        return ((density - (1.0 - self.level)) / RB_LOSS_P) ** 2

    def statistics(self, quickly_collected_only: bool = False) -> Statistics:
        stats = super().statistics(quickly_collected_only)
        values: dict[str, Any] = stats.to_dict()[self.name]
        values["mean_sparse_prob"] = self.mean_sparse_prob
        stats.register(self.name, values)
        return stats


@register_algorithm(RBSparsityConfig)
def build_rb_sparsity(ctx: BuildContext, section: RBSparsityConfig) -> RBSparsityController:
    layers = attach_masks(ctx, section, section.algorithm, RBMask)
    return RBSparsityController(ctx.model, ctx, section, layers)
