"""Weight masks as `torch.nn.utils.parametrize` parametrizations (applied before quantizers)."""

from __future__ import annotations

import math

import torch
from torch import nn

RB_INIT_LOGIT = math.log(0.99 / 0.01)  # logit(0.99): every weight starts almost surely kept
RB_EPS = 1e-6


class Mask(nn.Module):
    """A weight mask: `mask` is the current 0/1 tensor, `set_mask` overwrites it."""

    _binary_mask: torch.Tensor
    frozen: bool

    @property
    def mask(self) -> torch.Tensor:
        raise NotImplementedError

    def set_mask(self, mask: torch.Tensor) -> None:
        raise NotImplementedError


class BinaryMask(Mask):
    """weight * mask; the mask is a persistent buffer (all ones until an algorithm sets it)."""

    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        self.register_buffer("_binary_mask", torch.ones(shape))
        self.frozen = False

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self._binary_mask

    def set_mask(self, mask: torch.Tensor) -> None:
        self._binary_mask.copy_(mask)

    @property
    def mask(self) -> torch.Tensor:
        return self._binary_mask


class RBMask(Mask):
    """Regularization-based mask: trainable logits; a Bernoulli sample in training, a threshold in eval.

    The 0/1 step uses a straight-through estimator so the logits learn from the task loss and the
    density loss.
    """

    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        self._mask = nn.Parameter(torch.full(shape, RB_INIT_LOGIT))
        self.register_buffer("_binary_mask", torch.ones(shape))
        self.frozen = False

    def probabilities(self) -> torch.Tensor:
        return torch.sigmoid(self._mask)

    def _hard(self, soft: torch.Tensor) -> torch.Tensor:
        hard = (soft > 0.5).to(soft.dtype)
        return hard + soft - soft.detach()  # straight-through

    def current_mask(self) -> torch.Tensor:
        if self.training and not self.frozen:
            u = torch.rand_like(self._mask).clamp_(RB_EPS, 1 - RB_EPS)
            return self._hard(torch.sigmoid(self._mask + torch.log(u / (1 - u))))
        return self._hard(self.probabilities())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        mask = self.current_mask()
        with torch.no_grad():
            self._binary_mask.copy_((self._mask > 0).to(self._binary_mask.dtype))  # for statistics and export
        return weight * mask

    @property
    def mask(self) -> torch.Tensor:
        return (self._mask.detach() > 0).to(self._binary_mask.dtype)

    def set_mask(self, mask: torch.Tensor) -> None:
        with torch.no_grad():
            self._mask.copy_(torch.where(mask > 0, RB_INIT_LOGIT, -RB_INIT_LOGIT))
