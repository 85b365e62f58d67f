"""Filter importance: L1, L2 or geometric median of each output filter."""

from __future__ import annotations

import math

import torch


def filter_importance(weight: torch.Tensor, axis: int, kind: str, normalize: bool = False) -> torch.Tensor:
    w = weight.detach().float()
    if normalize:
        w = w / w.norm().clamp(min=1e-12)
    filters = w.transpose(0, axis).reshape(w.shape[axis], -1)  # (n_filters, fan)
    if kind == "L1":
        return filters.abs().sum(1)
    if kind == "L2":
        return filters.norm(dim=1)
    if kind == "geometric_median":
        return torch.cdist(filters[None], filters[None])[0].sum(1)  # sum of distances to all other filters
    raise ValueError(f"unknown filter importance {kind!r}; allowed: L1, L2, geometric_median")


def keep_count_uniform(n: int, level: float) -> int:
    """Filters kept at `level`: rounded up to a multiple of 8 (SIMD-friendly widths), as NNCF."""
    remaining = math.ceil((n - n * level) / 8 - 1e-9) * 8  # epsilon: 0.3 * 80 is 23.999... in floats
    return min(n, max(remaining, 0))
