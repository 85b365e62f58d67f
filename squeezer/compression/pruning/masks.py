"""Filter masks: zero whole output channels of a weight, bias or norm parameter."""

from __future__ import annotations

import torch
from torch import nn


class FilterMask(nn.Module):
    """Multiplies a tensor by a 0/1 mask along one axis (the output-channel axis)."""

    _binary_filter_pruning_mask: torch.Tensor

    def __init__(self, channels: int, axis: int, ndim: int) -> None:
        super().__init__()
        self.axis = axis
        self.ndim = ndim
        self.register_buffer("_binary_filter_pruning_mask", torch.ones(channels))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        shape = [1] * self.ndim
        shape[self.axis] = -1
        return t * self._binary_filter_pruning_mask.reshape(shape)

    def set_mask(self, mask: torch.Tensor) -> None:
        self._binary_filter_pruning_mask.copy_(mask)

    @property
    def mask(self) -> torch.Tensor:
        return self._binary_filter_pruning_mask
