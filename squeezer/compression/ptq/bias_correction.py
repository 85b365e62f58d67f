"""Fast bias correction: give each quantized layer back the mean output its FP32 twin has.

Rounding weights and inputs shifts a layer's mean output per channel, and the shifts add up through
the network. Two passes over the calibration batches fix it in topological order: the FP32 pass
records each layer's mean output per channel; the quantized pass measures the quantized mean and
corrects the layer's output on the fly, so every later layer is measured on already-corrected inputs
(the order NNCF's bias correction reaches by walking the graph, here in one pass). The accumulated
difference is added to the bias; a layer without a bias gets one (a BatchNorm after it folds it in).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from squeezer.compression.ptq.dataset import Inputs
from squeezer.compression.ptq.ranges import quantizers_enabled
from squeezer.compression.quantization.quantizer import FakeQuantizer

logger = logging.getLogger(__name__)

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def bias_of(model: nn.Module, name: str) -> torch.Tensor:
    return cast(torch.Tensor, model.get_submodule(name).bias)


def _channel_mean(out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """Mean over every dimension but the output channels (dim 1 of a conv, the last of a Linear)."""
    if isinstance(layer, nn.Linear):
        return out.detach().reshape(-1, out.shape[-1]).double().mean(0)
    return out.detach().transpose(0, 1).reshape(out.shape[1], -1).double().mean(1)


def _broadcast(delta: torch.Tensor, out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return delta.to(out.dtype)
    return delta.to(out.dtype).reshape(1, -1, *([1] * (out.dim() - 2)))


def _run(model: nn.Module, batches: list[Inputs]) -> None:
    with torch.no_grad():
        for args, kwargs in batches:
            model(*args, **kwargs)


def _with_hooks(layers: dict[str, nn.Module], make: Callable[[str, nn.Module], Callable]) -> list:
    return [layer.register_forward_hook(make(name, layer)) for name, layer in layers.items()]


def fast_bias_correction(
    model: nn.Module, layers: dict[str, nn.Module], batches: list[Inputs], quantizers: list[FakeQuantizer]
) -> dict[str, torch.Tensor]:
    """Correct the bias of each layer in `layers` (module path -> Conv/Linear); returns the correction
    added to each layer's bias (accuracy control takes it back from layers it returns to FP32)."""
    layers = {name: m for name, m in layers.items() if isinstance(m, _LAYERS)}
    if not layers or not batches:
        return {}
    fp_sum: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def record_fp(name: str, layer: nn.Module) -> Callable:
        def hook(_m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
            mean = _channel_mean(out, layer)
            fp_sum[name] = fp_sum.get(name, 0) + mean
            counts[name] = counts.get(name, 0) + 1

        return hook

    handles = _with_hooks(layers, record_fp)
    try:
        with quantizers_enabled(quantizers, False):
            _run(model, batches)
    finally:
        for h in handles:
            h.remove()
    fp_mean = {name: fp_sum[name] / counts[name] for name in fp_sum}
    q_sum: dict[str, torch.Tensor] = {}
    magnitude: dict[str, torch.Tensor] = {}

    def correct(name: str, layer: nn.Module) -> Callable:
        def hook(_m: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor | None:
            if name not in fp_mean:
                return None
            mean = _channel_mean(out, layer)
            q_sum[name] = q_sum.get(name, 0) + mean
            magnitude[name] = magnitude.get(name, 0) + out.detach().abs().double().mean()
            return out + _broadcast(fp_mean[name] - mean, out, layer)

        return hook

    handles = _with_hooks(layers, correct)
    try:
        _run(model, batches)
    finally:
        for h in handles:
            h.remove()
    report: dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        if name not in q_sum:
            continue
        n = counts[name]
        delta = (fp_mean[name] - q_sum[name] / n).float()
        with torch.no_grad():
            if getattr(layer, "bias", None) is None:
                weight = cast(torch.Tensor, layer.weight)
                layer.bias = nn.Parameter(torch.zeros(delta.shape[0], dtype=weight.dtype, device=weight.device))
            bias = bias_of(model, name)
            bias.add_(delta.to(bias.device, bias.dtype))
        report[name] = delta.detach().clone()
        logger.debug(
            "bias correction %s: %.3g of the mean output", name, float(delta.abs().max() / (magnitude[name] / n))
        )
    logger.info("fast bias correction: %d layers corrected", len(report))
    return report
