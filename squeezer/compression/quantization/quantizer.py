"""Fake-quantizer module with trainable ranges (spec algorithms.md §3.1-3.4).

The forward pass runs torch's fused fake-quantize kernels (one pass over the tensor, exact
round-half-to-even as NNCF on CPU); only the backward is written here, because NNCF's range
gradient is not the one torch's learnable kernels compute.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

EPS = 1e-16


@dataclass(frozen=True)
class QuantizerSpec:
    """Everything that fixes a quantizer's grid; JSON-serializable (it is part of the compression state)."""

    num_bits: int = 8
    mode: str = "symmetric"  # or "asymmetric"
    signedness_to_force: bool | None = None
    narrow_range: bool = False
    half_range: bool = False
    per_channel: bool = False
    scale_shape: tuple[int, ...] = (1,)
    logarithm_scale: bool = False
    is_weights: bool = False
    compression_lr_multiplier: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale_shape"] = list(self.scale_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantizerSpec:
        return cls(**{**d, "scale_shape": tuple(d["scale_shape"])})


def level_bounds(spec: QuantizerSpec, signed: bool) -> tuple[int, int]:
    """(level_low, level_high) of the integer grid, as in NNCF (half range = one bit less)."""
    bits = spec.num_bits - 1 if spec.half_range else spec.num_bits
    if spec.mode == "asymmetric":
        return 0, 2**bits - 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if spec.narrow_range:
        if low < 0:
            low += 1
        else:
            high -= 1
    return low, high


def _channel_axis(scale_shape: tuple[int, ...]) -> int | None:
    dims = [i for i, n in enumerate(scale_shape) if n > 1]
    return dims[0] if dims else None


def _fake_quantize(
    x: torch.Tensor, step: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int, axis: int | None
) -> torch.Tensor:
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(x, step.reshape(()), zero_point.reshape(()), qmin, qmax)
    return torch.fake_quantize_per_channel_affine(x, step.flatten(), zero_point.flatten(), axis, qmin, qmax)


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if t.shape == shape:
        return t
    return t.sum_to_size(shape)


class _SymmetricFQ(torch.autograd.Function):
    """out = step * clamp(round(x / step), lo, hi), step = scale / level_high."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, scale: torch.Tensor, level_low: int, level_high: int, axis: int | None
    ) -> torch.Tensor:
        step = (scale / level_high).to(torch.float32)
        zero_point = torch.zeros_like(step, dtype=torch.int32)
        out = _fake_quantize(x, step, zero_point, level_low, level_high, axis)
        ctx.save_for_backward(x, out, scale)
        ctx.levels = (level_low, level_high)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, out, scale = ctx.saved_tensors
        level_low, level_high = ctx.levels
        lo = scale * (level_low / level_high)
        mask_hi = x > scale
        mask_lo = x < lo
        inside = ~(mask_hi | mask_lo)
        grad_x = grad * inside
        grad_scale = None
        if ctx.needs_input_grad[1]:
            # NNCF's range gradient: (out - x) / range inside, 1 above, alpha below (spec §3.3).
            rng = scale - lo
            alpha = level_low / level_high
            per_elem = torch.where(inside, (out - x) / rng, mask_hi.to(x.dtype) + alpha * mask_lo.to(x.dtype))
            grad_scale = _sum_to(grad * per_elem, scale.shape)
        return grad_x, grad_scale, None, None, None


class _AsymmetricFQ(torch.autograd.Function):
    """Grid [lo, lo + rng] with `levels` points and an integral zero point (lo, rng already tuned)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, lo: torch.Tensor, rng: torch.Tensor, qmax: int, axis: int | None
    ) -> torch.Tensor:
        step = (rng / qmax).to(torch.float32)
        zero_point = torch.round(-lo / step).clamp(0, qmax).to(torch.int32)
        out = _fake_quantize(x, step, zero_point, 0, qmax, axis)
        ctx.save_for_backward(x, out, lo, rng)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, out, lo, rng = ctx.saved_tensors
        mask_hi = x > lo + rng
        mask_lo = x < lo
        outside = mask_hi | mask_lo
        grad_x = grad * ~outside
        grad_lo = _sum_to(grad * outside, lo.shape) if ctx.needs_input_grad[1] else None
        grad_rng = None
        if ctx.needs_input_grad[2]:
            per_elem = torch.where(outside, mask_hi.to(x.dtype), (out - x) / rng)
            grad_rng = _sum_to(grad * per_elem, rng.shape)
        return grad_x, grad_lo, grad_rng, None, None


def tune_range(input_low: torch.Tensor, input_range: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NNCF TuneRange: widen [low, low + range] so that 0 is exactly on the grid; identity gradient."""
    with torch.no_grad():
        hi = input_low + input_range
        lo_ = torch.clamp(input_low, max=0.0)
        hi_ = torch.clamp(hi, min=0.0)
        n = levels - 1
        zp = torch.round(-lo_ * n / (hi_ - lo_))
        lo2 = torch.where(zp < n, zp / (zp - n) * hi_, lo_)
        hi2 = torch.where(zp > 0, (zp - n) / zp * lo_, hi_)
        move_low = (hi_ - lo2) > (hi2 - lo_)
        new_lo = torch.where(move_low, lo2, lo_)
        new_rng = torch.where(move_low, hi_ - lo2, hi2 - lo_)
    return input_low + (new_lo - input_low).detach(), input_range + (new_rng - input_range).detach()


@dataclass
class _Collector:
    """Receives the raw input tensors while range initialization runs."""

    batches: list[torch.Tensor] = field(default_factory=list)


class FakeQuantizer(nn.Module):
    """A trainable fake quantizer: symmetric (`scale`) or asymmetric (`input_low`, `input_range`)."""

    def __init__(self, spec: QuantizerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("enabled", torch.ones(1, dtype=torch.int32))
        signed = bool(spec.signedness_to_force) or spec.mode == "asymmetric"
        self.register_buffer("signed_tensor", torch.tensor([int(signed)], dtype=torch.int32))
        shape = spec.scale_shape
        if spec.mode == "symmetric":
            self.scale = nn.Parameter(torch.ones(shape))
        else:
            self.input_low = nn.Parameter(torch.zeros(shape))
            self.input_range = nn.Parameter(torch.ones(shape))
        self.collector: _Collector | None = None
        self.initialized = False
        self._register_lr_hook()

    # -------------------------------------------------------------------------------- properties
    @property
    def signed(self) -> bool:
        return bool(self.signed_tensor.item())

    @signed.setter
    def signed(self, value: bool) -> None:
        self.signed_tensor.fill_(int(value))

    @property
    def is_enabled(self) -> bool:
        return bool(self.enabled.item())

    def set_enabled(self, value: bool) -> None:
        self.enabled.fill_(int(value))
        for p in self.parameters():
            p.requires_grad_(value)

    @property
    def levels(self) -> tuple[int, int]:
        return level_bounds(self.spec, self.signed)

    @property
    def axis(self) -> int | None:
        return _channel_axis(self.spec.scale_shape)

    def _register_lr_hook(self) -> None:
        m = self.spec.compression_lr_multiplier
        if m is not None:
            for p in self.parameters():
                p.register_hook(lambda g, m=m: g * m)

    # -------------------------------------------------------------------------------- ranges
    def _raw(self, p: torch.Tensor) -> torch.Tensor:
        return p.exp() if self.spec.logarithm_scale else p

    def _eps(self) -> float:
        return 0.0 if self.spec.logarithm_scale else EPS

    def quant_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi) of the representable range, after TuneRange for asymmetric quantizers."""
        level_low, level_high = self.levels
        if self.spec.mode == "symmetric":
            scale = self._raw(self.scale).abs() + self._eps()
            return scale * level_low / level_high, scale
        lo, rng = tune_range(self.input_low, self._raw(self.input_range).abs() + self._eps(), level_high + 1)
        return lo, lo + rng

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """(step, zero_point, qmin, qmax) of the integer grid, as ONNX QuantizeLinear uses them."""
        with torch.no_grad():
            level_low, level_high = self.levels
            lo, hi = self.quant_range()
            step = (hi - lo) / (level_high - level_low)
            zero_point = (torch.round(-lo / step) + level_low).to(torch.int32)
            return step.float(), zero_point, level_low, level_high

    def apply_minmax(self, min_v: torch.Tensor, max_v: torch.Tensor, lower_bound: float) -> None:
        """NNCF apply_minmax_init (spec §3.5); `lower_bound` floors the initial symmetric scale."""
        with torch.no_grad():
            min_v = min_v.reshape(self.spec.scale_shape).float()
            max_v = max_v.reshape(self.spec.scale_shape).float()
            if self.spec.mode == "symmetric":
                if self.spec.signedness_to_force is None:
                    self.signed = bool((min_v < 0).any())
                abs_max = torch.maximum(min_v.abs(), max_v.abs()).clamp(min=lower_bound)
                self.scale.copy_(abs_max.log() if self.spec.logarithm_scale else abs_max)
            else:
                r = (max_v - min_v).clamp(min=0)
                widest = r.max().clamp(min=1e-8)
                corr = (torch.clamp(r, 0.01 * widest, widest) - r) / 2
                rng = r + 2 * corr
                self.input_low.copy_(min_v - corr)
                self.input_range.copy_(rng.log() if self.spec.logarithm_scale else rng)
        self.initialized = True

    # -------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.collector is not None:
            self.collector.batches.append(x.detach())
            return x
        if not self.is_enabled:
            return x
        level_low, level_high = self.levels
        if self.spec.mode == "symmetric":
            scale = self._raw(self.scale).abs() + self._eps()
            if scale.dtype != x.dtype:
                scale = scale.to(x.dtype)
            return _SymmetricFQ.apply(x, scale, level_low, level_high, self.axis)
        lo, rng = tune_range(self.input_low, self._raw(self.input_range).abs() + self._eps(), level_high + 1)
        return _AsymmetricFQ.apply(x, lo.to(x.dtype), rng.to(x.dtype), level_high, self.axis)

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"bits={s.num_bits}, mode={s.mode}, signed={self.signed}, per_channel={s.per_channel}, "
            f"narrow={s.narrow_range}, half_range={s.half_range}"
        )
