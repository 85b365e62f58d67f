"""Const sparsity: keep the zeros a checkpoint already has (all-ones masks until a state dict fills them)."""

from __future__ import annotations

from torch import nn

from squeezer.compression.build import BuildContext
from squeezer.compression.config.models import ConstSparsityConfig
from squeezer.compression.controller import CompressionStage, StubScheduler
from squeezer.compression.registry import name_of, register_algorithm
from squeezer.compression.sparsity.base import SparsityController, attach_masks, effective_weight
from squeezer.compression.sparsity.masks import BinaryMask, Mask
from squeezer.compression.targets import Layer


class ConstSparsityController(SparsityController):
    name = name_of(ConstSparsityConfig)

    def __init__(
        self,
        model: nn.Module,
        ctx: BuildContext,
        section: ConstSparsityConfig,
        layers: list[tuple[Layer, nn.Module, Mask]],
    ) -> None:
        super().__init__(model, ctx, section, layers)
        self._scheduler = StubScheduler()

    def set_sparsity_level(self, level: float) -> None:
        """Const masks never change."""

    def compression_stage(self) -> CompressionStage:
        return CompressionStage.FULLY_COMPRESSED

    @property
    def compression_rate(self) -> float | None:
        return None

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        raise NotImplementedError("const sparsity keeps the masks it was given; its rate cannot be set")


@register_algorithm(ConstSparsityConfig)
def build_const_sparsity(ctx: BuildContext, section: ConstSparsityConfig) -> ConstSparsityController:
    layers = attach_masks(ctx, section, section.algorithm, BinaryMask, allow_frozen=True)
    ctrl = ConstSparsityController(ctx.model, ctx, section, layers)
    if ctx.should_init:
        # a model whose weights already contain zeros keeps them as its masks
        for _, module, mask in layers:
            mask.set_mask((effective_weight(module) != 0).to(mask.mask.dtype))
    return ctrl
