"""The config's rules for one quantizer: whether its scopes take a node, and its spec (bits, mode,
granularity) from the quantizer group, the scope overrides and the target device."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from squeezer.compression.config.models import QuantizationConfig, QuantizerGroup, QuantizerOverride
from squeezer.compression.graph.modules import registration
from squeezer.compression.graph.scopes import matches_any, should_consider
from squeezer.compression.quantization.placement_policy import PlacementOptions
from squeezer.compression.quantization.quantizer import QuantizerSpec


def considered(aliases: list[str], group: QuantizerGroup, cfg: QuantizationConfig, opts: PlacementOptions) -> bool:
    """The scopes of one quantizer group: global, section and group ignored scopes; the narrowest target scopes."""
    ignored = (opts.global_ignored or []) + (cfg.ignored_scopes or []) + (group.ignored_scopes or [])
    section_target = opts.global_target if opts.global_target is not None else cfg.target_scopes
    target = group.target_scopes if group.target_scopes is not None else section_target
    return should_consider(aliases, ignored, target)


def _override(group: QuantizerGroup, overrides: dict[str, QuantizerOverride], aliases: list[str]) -> dict[str, Any]:
    values = {k: getattr(group, k) for k in ("mode", "bits", "signed", "per_channel")}
    for pattern, ov in overrides.items():
        if matches_any(aliases, [pattern]):
            values.update({k: v for k, v in ov.model_dump(exclude={"initializer"}).items() if v is not None})
    return values


def _weight_scale_shape(module: nn.Module, per_channel: bool, tensor: str = "weight") -> tuple[int, ...]:
    weight = cast(torch.Tensor, getattr(module, tensor))
    if not per_channel:
        return (1,)
    reg = registration(module)
    dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
    if reg:
        dim = reg["weight_dim"]
    shape = [1] * weight.dim()
    shape[dim] = int(weight.shape[dim])
    return tuple(shape)


def weight_spec(
    module: nn.Module,
    cfg: QuantizationConfig,
    opts: PlacementOptions,
    aliases: list[str],
    first_conv: bool,
    tensor: str = "weight",
) -> QuantizerSpec:
    """The weight quantizer of one layer: config, scope overrides and the target device's rules."""
    hw = opts.target_device != "TRIAL"
    v = _override(cfg.weights, cfg.scope_overrides.weights, aliases)
    bits = v["bits"] or 8
    per_channel = v["per_channel"] if v["per_channel"] is not None else hw
    signed = v["signed"] if v["signed"] is not None else (True if hw else None)
    half = (
        bits == 8
        and opts.target_device in ("ANY", "CPU", "CPU_SPR")
        and (cfg.overflow_fix == "enable" or (cfg.overflow_fix == "first_layer_only" and first_conv))
    )
    return QuantizerSpec(
        num_bits=bits,
        mode=v["mode"] or "symmetric",
        signedness_to_force=signed,
        narrow_range=bits == 8 and not half,
        half_range=half,
        per_channel=per_channel,
        scale_shape=_weight_scale_shape(module, per_channel, tensor),
        logarithm_scale=cfg.weights.logarithm_scale,
        is_weights=True,
        compression_lr_multiplier=cfg.compression_lr_multiplier,
    )


def activation_spec(cfg: QuantizationConfig, consumer_aliases: list[str], shape: torch.Size | None) -> QuantizerSpec:
    """The quantizer of one activation tensor of `shape`: the scope overrides of the ops that read it
    apply; asymmetric by default under the mixed preset."""
    v = _override(cfg.activations, cfg.scope_overrides.activations, consumer_aliases)
    mode = v["mode"] or ("asymmetric" if cfg.preset == "mixed" else "symmetric")
    per_channel = bool(v["per_channel"])
    scale_shape: tuple[int, ...] = (1,)
    if per_channel and shape is not None and len(shape) >= 2:
        scale_shape = tuple(shape[1] if i == 1 else 1 for i in range(len(shape)))
    return QuantizerSpec(
        num_bits=v["bits"] or 8,
        mode=mode,
        signedness_to_force=v["signed"],
        per_channel=per_channel,
        scale_shape=scale_shape,
        logarithm_scale=cfg.activations.logarithm_scale,
        compression_lr_multiplier=cfg.compression_lr_multiplier,
    )
