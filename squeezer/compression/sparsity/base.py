"""What the three sparsity algorithms share: masked layers, statistics, strip, rate and stage."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from squeezer.compression.build import BuildContext
from squeezer.compression.controller import CompressionController, CompressionStage, Statistics, StubScheduler
from squeezer.compression.graph.surgery import fold_parametrizations, original_weight, weight_parametrizations
from squeezer.compression.quantization.quantizer import FakeQuantizer
from squeezer.compression.sparsity.masks import BinaryMask, Mask, RBMask
from squeezer.compression.targets import Layer, scoped_layers
from squeezer.errors import CompressionError


def attach_masks(
    ctx: BuildContext, section: Any, algorithm: str, mask_cls: type[Mask], allow_frozen: bool = False
) -> list[tuple[Layer, nn.Module, Mask]]:
    layers = []
    for layer in scoped_layers(ctx, section, algorithm):
        module = ctx.model.get_submodule(layer.module_name)
        weight = original_weight(module)
        if not weight.requires_grad and not allow_frozen:
            raise CompressionError(
                f"frozen layers are not allowed for {algorithm.replace('_', ' ')}: {layer.node_name} has "
                "requires_grad=False; unfreeze it or put it into ignored_scopes"
            )
        mask = mask_cls(weight.shape).to(weight.device)
        parametrize.register_parametrization(module, "weight", mask)
        layers.append((layer, module, mask))
    return layers


class SparsityController(CompressionController):
    """Base: `layers` carry a mask each; subclasses decide how masks follow the level."""

    mask_cls: type[Mask] = BinaryMask

    def __init__(
        self, model: nn.Module, ctx: BuildContext, section: Any, layers: list[tuple[Layer, nn.Module, Mask]]
    ) -> None:
        super().__init__(model, ctx)
        self.section = section
        self.layers = layers
        params = getattr(section, "params", None)
        self.global_mode = params is None or params.sparsity_level_setting_mode == "global"
        self.level = 0.0
        self.frozen = False

    # ----------------------------------------------------------------------------- level
    def set_sparsity_level(self, level: float) -> None:
        raise NotImplementedError

    def freeze(self, frozen: bool = True) -> None:
        self.frozen = frozen
        for _, _, mask in self.layers:
            mask.frozen = frozen

    def measured_sparsity_level(self) -> float:
        """Share of zeros in the masks of the sparsified layers (what the model really has)."""
        zeros = sum(float((mask.mask == 0).sum()) for _, _, mask in self.layers)
        total = sum(mask.mask.numel() for _, _, mask in self.layers)
        return zeros / total if total else 0.0

    @property
    def compression_rate(self) -> float | None:
        return self.level

    @compression_rate.setter
    def compression_rate(self, value: float) -> None:
        was_frozen = self.frozen
        self.freeze(False)
        self.set_sparsity_level(value)
        self.freeze(was_frozen)

    @property
    def current_target(self) -> float:
        scheduler = self.scheduler
        return getattr(scheduler, "current_sparsity_level", self.level)

    def compression_stage(self) -> CompressionStage:
        if not self.global_mode or isinstance(self.scheduler, StubScheduler):
            return CompressionStage.FULLY_COMPRESSED
        current = self.current_target
        if current >= getattr(self.scheduler, "target_level", 0.0):
            return CompressionStage.FULLY_COMPRESSED
        return CompressionStage.UNCOMPRESSED if current == 0 else CompressionStage.PARTIALLY_COMPRESSED

    # ----------------------------------------------------------------------------- reporting
    def statistics(self, quickly_collected_only: bool = False) -> Statistics:
        layer_zeros = layer_total = 0.0
        for _, module, _ in self.layers:
            w = effective_weight(module)
            layer_zeros += float((w == 0).sum())
            layer_total += w.numel()
        zeros, total = model_zeros(self.model)
        per_layer = {
            layer.node_name: {
                "weight_shape": list(mask.mask.shape),
                "sparsity": float((effective_weight(module) == 0).float().mean()),
            }
            for layer, module, mask in self.layers
        }
        values: dict[str, Any] = {
            "sparsity_level_for_model": zeros / total if total else 0.0,
            "sparsity_level_for_sparsified_layers": layer_zeros / layer_total if layer_total else 0.0,
            "target_sparsity_level": self.current_target if self.global_mode else None,
            "layers": per_layer,
        }
        stats = Statistics()
        stats.register(self.name, values)
        return stats

    def strip_model(self, model: nn.Module) -> nn.Module:
        """Masks become zeros in the stored weights; the mask modules are removed."""
        for layer, _, _ in self.layers:
            module = model.get_submodule(layer.module_name)
            if any(isinstance(p, (BinaryMask, RBMask)) for p in weight_parametrizations(module)):
                fold_parametrizations(model, layer.module_name, lambda p: isinstance(p, (BinaryMask, RBMask)))
        return model

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state[self.name]["level"] = self.level
        state[self.name]["frozen"] = self.frozen
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        own = state.get(self.name) or {}
        self.level = own.get("level", self.level)
        self.freeze(own.get("frozen", self.frozen))


def model_zeros(model: nn.Module) -> tuple[float, int]:
    """(zeros, count) over the model's own parameters as the forward pass sees them (masks applied),
    leaving out the compression machinery (mask logits, quantizer ranges)."""
    machinery = (BinaryMask, RBMask, FakeQuantizer, parametrize.ParametrizationList)
    zeros, total = 0.0, 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, machinery):
                continue
            tensors = [p for p in module._parameters.values() if p is not None]
            if parametrize.is_parametrized(module):
                tensors += [getattr(module, name) for name in cast(Any, module).parametrizations]
            for t in tensors:
                zeros += float((t == 0).sum())
                total += t.numel()
    return zeros, total


def weight_importance(weight: torch.Tensor, kind: str) -> torch.Tensor:
    w = weight.detach().abs()
    if kind == "normed_abs":
        return w / weight.detach().norm().clamp(min=1e-12)
    return w


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight as the forward pass uses it (after every parametrization), detached."""
    return cast(torch.Tensor, module.weight).detach()
