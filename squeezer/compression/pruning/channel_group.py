"""What a channel group is: the layers whose channels are pruned together (`ChannelGroup`, its `Member`s),
the layers left whole and why (`SkippedLayers`), and the layer kinds and channel axes they are read by.

`groups.find_groups` builds them with torch-pruning; masks, FLOPs, the removal check and channel removal
read them here without importing torch-pruning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def out_axis(module: nn.Module) -> int:
    return 1 if isinstance(module, TRANSPOSED) else 0


def in_axis(module: nn.Module) -> int:
    return 0 if isinstance(module, TRANSPOSED) else 1


@dataclass
class Member:
    """A layer touched by a group: its channel `idxs[i]` is the group's channel `roots[i]`."""

    name: str
    idxs: list[int]
    roots: list[int]

    def keep_mask(self, group_mask: torch.Tensor, size: int) -> torch.Tensor:
        """1 for channels of this layer that stay, given the group's 0/1 mask."""
        mask = torch.ones(size)
        mask[self.idxs] = group_mask[self.roots].to(mask.dtype)
        return mask


@dataclass
class ChannelGroup:
    """`n` coupled channels: `producers` output them (a concat splits them among producers),
    `norms` follow them, `consumers` read them as input channels."""

    id: int
    n: int
    producers: list[Member] = field(default_factory=list)
    norms: list[Member] = field(default_factory=list)
    consumers: list[Member] = field(default_factory=list)

    @property
    def producer_names(self) -> list[str]:
        return [m.name for m in self.producers]

    def to_dict(self) -> dict[str, Any]:
        members = {
            k: [[m.name, m.idxs, m.roots] for m in getattr(self, k)] for k in ("producers", "norms", "consumers")
        }
        return {"id": self.id, "n": self.n, **members}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChannelGroup:
        members = {k: [Member(*m) for m in d[k]] for k in ("producers", "norms", "consumers")}
        return cls(d["id"], d["n"], **members)


def is_conv1d(module: nn.Module) -> bool:
    """Hugging Face's `Conv1D` (GPT-2), or its lifted form `Addmm`: a Linear whose weight is stored (in, out)."""
    return type(module).__name__ in ("Conv1D", "Addmm") and hasattr(module, "nf") and hasattr(module, "weight")


def grouped(module: nn.Module) -> bool:
    """A grouped (not depthwise) convolution: its input channels come in equal blocks per group."""
    return isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and 1 < module.groups != module.in_channels


def depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and module.groups == module.in_channels > 1


@dataclass
class SkippedLayers:
    """Layers left whole, and why: a user reads this in `ctrl.statistics()` and the log."""

    layers: list[str]
    reason: str
    by_rule: bool = False  # left whole by a rule (output layer, scopes, first conv, ...), not for a limitation

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "reason": self.reason, "by_rule": self.by_rule}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SkippedLayers:
        return cls(list(d["layers"]), str(d["reason"]), bool(d.get("by_rule", False)))
