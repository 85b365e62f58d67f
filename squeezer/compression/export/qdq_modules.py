"""The modules an export copy is made of in place of quantizers: an integer `Grid` read from a Squeezer
quantizer or a torch FakeQuantize, `ActivationQDQ` for activations and `WeightQDQ` for weights, each a
plain fake-quantize call that torch's exporter writes as QuantizeLinear/DequantizeLinear."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize

from squeezer.compression.graph.surgery import weight_parametrizations
from squeezer.compression.quantization.quantizer import FakeQuantizer
from squeezer.errors import ExportError


@dataclass
class Grid:
    """Integer grid of a quantizer: real = (q - zero_point) * step, q in [qmin, qmax]."""

    step: torch.Tensor  # () or (C,)
    zero_point: torch.Tensor  # int64, same shape
    qmin: int
    qmax: int
    axis: int | None


def grid_of(q: nn.Module) -> Grid | None:
    """The grid of a Squeezer quantizer or a torch FakeQuantize; None when it is disabled."""
    if isinstance(q, FakeQuantizer):
        if not q.is_enabled:
            return None
        step, zp, qmin, qmax = q.qparams()
        axis = q.axis
        if axis is None:
            return Grid(step.reshape(()), zp.reshape(()).long(), qmin, qmax, None)
        return Grid(step.flatten(), zp.flatten().long(), qmin, qmax, axis)
    if isinstance(q, FakeQuantize):
        if not bool(q.fake_quant_enabled.item()):
            return None
        per_channel = q.is_per_channel
        step = q.scale.detach().float()
        zp = q.zero_point.detach().long()
        if not per_channel:
            return Grid(step.reshape(()), zp.reshape(()), q.quant_min, q.quant_max, None)
        return Grid(step.flatten(), zp.flatten(), q.quant_min, q.quant_max, q.ch_axis)
    return None


def bcast(t: torch.Tensor, axis: int | None, ndim: int) -> torch.Tensor:
    if axis is None or t.dim() == 0:
        return t
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


class ActivationQDQ(nn.Module):
    """Exports as QuantizeLinear/DequantizeLinear with a uint8 zero point (onnxruntime's fast path), or,
    with `int8` and a signed grid, an int8 one (what OpenVINO wants at a concat's inputs)."""

    jitter = 0.0  # relative noise put on the input by `rounding_noise`; 0 in the export

    step_t: torch.Tensor
    zp_t: torch.Tensor

    def __init__(self, grid: Grid, int8: bool = False) -> None:
        super().__init__()
        self.axis = grid.axis
        self.qmin, self.qmax = grid.qmin, grid.qmax
        signed = int8 and -128 <= grid.qmin < 0 and grid.qmax <= 127
        self.low, self.high = (-128, 127) if signed else (0, 255)  # the stored type's range
        zp = grid.zero_point if signed else grid.zero_point - grid.qmin  # uint8: shift the grid into [0, 255]
        if grid.axis is None:
            self.step = float(grid.step)
            self.zp = int(zp)
            self.lo = (grid.qmin - int(grid.zero_point)) * self.step
            self.hi = (grid.qmax - int(grid.zero_point)) * self.step
        else:
            self.register_buffer("step_t", grid.step.float())
            self.register_buffer("zp_t", zp.int())
        self.needs_clamp = grid.qmax - grid.qmin < 255

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.jitter:
            x = x * (1 + self.jitter * torch.randn_like(x))
        if self.axis is None:
            if self.needs_clamp:
                x = x.clamp(self.lo, self.hi)
            return torch.fake_quantize_per_tensor_affine(x, self.step, self.zp, self.low, self.high)
        return torch.fake_quantize_per_channel_affine(x, self.step_t, self.zp_t, self.axis, self.low, self.high)


class WeightQDQ(nn.Module):
    """Weight parametrization that exports as QuantizeLinear/DequantizeLinear (folded to int8 later)."""

    step: torch.Tensor
    zp: torch.Tensor

    def __init__(self, step: torch.Tensor, zero_point: torch.Tensor, axis: int, qmin: int, qmax: int) -> None:
        super().__init__()
        self.register_buffer("step", step.float().contiguous())
        self.register_buffer("zp", zero_point.int().contiguous())
        self.axis, self.qmin, self.qmax = axis, qmin, qmax

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_channel_affine(w, self.step, self.zp, self.axis, self.qmin, self.qmax)


def weight_quantizer(module: nn.Module, tensor: str = "weight") -> nn.Module | None:
    return next(
        (p for p in weight_parametrizations(module, tensor) if isinstance(p, (FakeQuantizer, FakeQuantize))), None
    )


def on_export_grid(weight: torch.Tensor, grid: Grid, out_axis: int, k: torch.Tensor) -> tuple[torch.Tensor, WeightQDQ]:
    """`weight` (on `grid`) times the per-output-channel factor `k` (a folded BatchNorm's; ones without one),
    as a per-channel int8 grid and the parametrization that exports it as QuantizeLinear/DequantizeLinear."""
    n_out = weight.shape[out_axis]
    step = grid.step.expand(n_out) if grid.axis is None else grid.step
    zp = grid.zero_point.expand(n_out) if grid.axis is None else grid.zero_point
    if grid.axis not in (None, out_axis):
        raise ExportError(f"weight quantized along axis {grid.axis}, expected output axis {out_axis}")
    q = torch.round(weight / bcast(step, out_axis, weight.dim())) + bcast(zp, out_axis, weight.dim())
    q = q.clamp(grid.qmin, grid.qmax)
    neg = k < 0
    if neg.any():
        # (q - zp) * s * k with k < 0 equals (q' - zp') * s * |k| on the mirrored grid.
        mirror = grid.qmin + grid.qmax if bool((zp != 0).any()) else 0
        sign = bcast(neg, out_axis, weight.dim())
        q = torch.where(sign, mirror - q, q)
        zp = torch.where(neg, mirror - zp, zp)
    step = step * k.abs()
    cmin, cmax = (-128, 127) if grid.qmin < 0 else (0, 255)
    q = q.clamp(cmin, cmax)
    new_weight = (q - bcast(zp, out_axis, weight.dim())) * bcast(step, out_axis, weight.dim())
    return new_weight, WeightQDQ(step, zp, out_axis, cmin, cmax)
