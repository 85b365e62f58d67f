"""Range estimation for post-training quantization: statistics of the FP32 model, then a range per quantizer.

Weights keep the per-channel min-max range (8-bit per-channel grids lose nothing measurable to clipping).
Activations default to the MSE-optimal range: the candidate range, from the observed extremes down to
a fifth of them, whose grid reproduces the calibration values with the smallest squared error. Each
candidate is scored with the quantizer itself, so the score sees exactly the grid that runs (signedness,
narrow range, the asymmetric zero point) and per-channel quantizers pick a range per channel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from squeezer.compression.ptq.tokens import masking, real_rows
from squeezer.compression.ptq.types import RangeEstimator
from squeezer.compression.quantization.quantizer import FakeQuantizer
from squeezer.compression.quantization.range_init import StatCollector, _floor_empty_ranges

MSE_SAMPLES = 1 << 16  # values per quantizer the MSE search scores (a uniform random subsample)
MSE_CANDIDATES = torch.linspace(0.2, 1.0, 33)
VALUES_PER_BATCH = 8192  # values kept per batch and per-tensor quantizer for the MSE and percentile ranges


@contextlib.contextmanager
def quantizers_enabled(quantizers: list[FakeQuantizer], enabled: bool) -> Iterator[None]:
    """Switch quantizers on or off for a while (the `enabled` buffer only; trainability is left alone)."""
    saved = [int(q.enabled.item()) for q in quantizers]
    for q in quantizers:
        q.enabled.fill_(int(enabled))
    try:
        yield
    finally:
        for q, value in zip(quantizers, saved, strict=True):
            q.enabled.fill_(value)


class _PerTensorCollector(StatCollector):
    """StatCollector for a per-tensor quantizer in one pass over the tensor (`aminmax`) plus a random
    subsample: the general collector's channel transpose and per-sample statistics cost ResNet-18's
    calibration pass as much again as the convolutions."""

    def update(self, x: torch.Tensor, keep_values: bool) -> None:
        x = x.detach()
        lo, hi = torch.aminmax(x)
        lo, hi = lo.float().reshape(1), hi.float().reshape(1)
        self.mins.append(lo)
        self.maxs.append(hi)
        self.abs_maxs.append(torch.maximum(lo.abs(), hi.abs()))
        if keep_values:
            flat = x.reshape(-1)
            if flat.numel() > VALUES_PER_BATCH:
                flat = flat[self.subsample(flat.numel(), VALUES_PER_BATCH, flat.device)]
            self.values.append(flat.float().reshape(1, -1))


class ActivationStats:
    """Statistics of one activation quantizer's input, reduced batch by batch (bounded memory)."""

    def __init__(self, quantizer: FakeQuantizer, keep_values: bool) -> None:
        self.quantizer = quantizer
        self.collector = StatCollector(quantizer.axis) if quantizer.axis is not None else _PerTensorCollector(None)
        self.keep_values = keep_values

    def update(self, x: torch.Tensor) -> None:
        if self.quantizer.axis is None and masking(x):
            x = real_rows(x)  # a per-tensor range from the real tokens only
        self.collector.update(x, self.keep_values)

    @property
    def seen(self) -> bool:
        return bool(self.collector.mins)


def set_activation_range(stats: ActivationStats, estimator: RangeEstimator, ratio: float = 1.0) -> None:
    """Give the quantizer the range `estimator` picks from `stats` (min-max shrunk by `ratio`, when given:
    SmoothQuant's search chose it by the output error of the layers that read the tensor)."""
    q, c = stats.quantizer, stats.collector
    symmetric = q.spec.mode == "symmetric"
    lo, hi = c.min_max("min_max", symmetric, {})
    if estimator is RangeEstimator.PERCENTILE:
        lo, hi = c.min_max("percentile", symmetric, {"min_percentile": 0.01, "max_percentile": 99.99})
        if symmetric:  # the symmetric grid's scale is the larger magnitude of the two
            hi = torch.maximum(lo.abs(), hi.abs())
    if ratio < 1.0:
        q.apply_minmax(lo * ratio, _floor_empty_ranges(lo, hi) * ratio, lower_bound=1e-8)
        return
    q.apply_minmax(lo, _floor_empty_ranges(lo, hi), lower_bound=1e-8)
    if estimator is RangeEstimator.MSE and c.values:
        _mse_search(q, lo, hi, torch.cat(c.values, dim=1))


def _mse_search(q: FakeQuantizer, lo: torch.Tensor, hi: torch.Tensor, values: torch.Tensor) -> None:
    """Shrink the range by the factor (per channel) whose grid reproduces `values` best."""
    if values.shape[1] > MSE_SAMPLES:
        values = values[:, torch.randperm(values.shape[1], generator=torch.Generator().manual_seed(0))[:MSE_SAMPLES]]
    channels = values.shape[0]
    shape = q.spec.scale_shape
    axis = q.axis
    # values (C, N) laid out as the quantizer's input: (N, C, 1, ...) per channel, (N,) per tensor
    per_channel = axis is not None
    x = (
        values.T.reshape(-1, *[channels if i == axis else 1 for i in range(1, len(shape))])
        if per_channel
        else values[0]
    )
    hi = _floor_empty_ranges(lo, hi)
    best_err = torch.full((channels,), float("inf"))
    best_ratio = torch.ones(channels)
    with torch.no_grad():
        for ratio in MSE_CANDIDATES:
            q.apply_minmax(lo * ratio, hi * ratio, lower_bound=1e-8)
            err = (q(x) - x).pow(2)
            err = err.reshape(err.shape[0], -1).mean(0) if per_channel else err.mean().reshape(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_ratio = torch.where(better, ratio, best_ratio)
    q.apply_minmax(lo * best_ratio, hi * best_ratio, lower_bound=1e-8)
