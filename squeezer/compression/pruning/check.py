"""The safety net behind torch-pruning: every channel group is pruned once on a copy of the model,
and kept only if the smaller model still runs on the example input and computes what the masked
model computes.

torch-pruning's graph can be wrong about a model it does not fully understand (a qkv Linear whose
output is reshaped into attention heads, a channel shuffle): the masks then train fine, but the
model `strip()` or the export cuts breaks later, or silently computes something else. A group that
fails here is left whole, with the reason; it is found before training, not after.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
from typing import Any

import torch
from torch import nn

from squeezer.compression.graph.surgery import original_weight
from squeezer.compression.pruning.channel_group import NORMS, ChannelGroup, SkippedLayers, out_axis
from squeezer.compression.pruning.removal import remove_channels

logger = logging.getLogger(__name__)


def trial_mask(n: int) -> torch.Tensor:
    """Every other channel pruned: never aligned with attention heads or shuffle blocks, so a
    reshape that does not follow the channels shows up as a different output."""
    mask = torch.ones(n)
    mask[1::2] = 0.0
    return mask


def _random_like(example: tuple[tuple[Any, ...], dict[str, Any]]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The example input with random values: on all-ones inputs every token of a sequence is the
    same, and attention cannot tell heads apart."""
    gen = torch.Generator().manual_seed(0)

    def randomize(t: Any) -> Any:
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return t
        if t.is_floating_point():
            return torch.randn(t.shape, generator=gen).to(t.device, t.dtype)
        if t.dtype in (torch.int32, torch.int64) and int(t.min()) >= 0:  # token ids: stay in the vocabulary
            return torch.randint(0, int(t.max()) + 1, t.shape, generator=gen).to(t.device, t.dtype)
        return t

    args, kwargs = example
    return tuple(randomize(a) for a in args), {k: randomize(v) for k, v in kwargs.items()}


def _randomize(model: nn.Module) -> None:
    """Fresh random weights of unit-scale activations: with a freshly initialized transformer's tiny
    weights attention is nearly uniform and cannot tell heads apart, so mixing heads goes unseen.
    Whether removal matches masking depends on the structure only, not on the weights."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            scale = 1.0 / math.sqrt(p[0].numel()) if p.dim() >= 2 else 0.5
            p.copy_(torch.randn(p.shape, generator=gen).to(p.device, p.dtype) * scale)


def _outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    elif not isinstance(out, list | tuple):
        return []
    return [t for item in out for t in _outputs(item)]


def _zero_pruned(model: nn.Module, groups: list[ChannelGroup], masks: dict[int, torch.Tensor]) -> None:
    """What the filter masks do during training: pruned filters (and their norms) output zeros."""
    with torch.no_grad():
        for group in groups:
            for member in group.producers:
                module = model.get_submodule(member.name)
                weight = original_weight(module)
                drop = torch.nonzero(member.keep_mask(masks[group.id], weight.shape[out_axis(module)]) == 0).flatten()
                weight.index_fill_(out_axis(module), drop.to(weight.device), 0.0)
                bias = getattr(module, "bias", None)
                if isinstance(bias, torch.Tensor):
                    bias.index_fill_(0, drop.to(bias.device), 0.0)
            for member in group.norms:
                norm = model.get_submodule(member.name)
                if not isinstance(norm, NORMS):
                    continue
                drop = torch.nonzero(member.keep_mask(masks[group.id], norm.num_features) == 0).flatten()
                for t in (norm.weight, norm.bias, norm.running_mean):
                    if t is not None:
                        t.index_fill_(0, drop.to(t.device), 0.0)


def _failure(
    model: nn.Module, groups: list[ChannelGroup], example: tuple[tuple[Any, ...], dict[str, Any]]
) -> str | None:
    """Why removing `groups` (at the trial mask) breaks the model; None when it does not."""
    args, kwargs = example
    trial = copy.deepcopy(model).eval()
    _randomize(trial)
    masks = {g.id: trial_mask(g.n) for g in groups}
    _zero_pruned(trial, groups, masks)
    with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):  # torch.fx prints failures itself
        expected = _outputs(trial(*args, **kwargs))
        try:
            remove_channels(trial, groups, masks)
            got = _outputs(trial(*args, **kwargs))
        except Exception as exc:  # whatever the cut model raises is the reason to leave the group whole
            return f"the pruned model fails: {type(exc).__name__}: {exc}".splitlines()[0]
    if [t.shape for t in got] != [t.shape for t in expected]:
        return (
            f"the pruned model's outputs have shapes {[tuple(t.shape) for t in got]} instead of "
            f"{[tuple(t.shape) for t in expected]}"
        )
    for want, have in zip(expected, got, strict=True):
        scale = 1.0 + float(want.nan_to_num().abs().max()) if want.numel() else 1.0
        if want.is_floating_point() and not torch.allclose(have, want, rtol=1e-3, atol=1e-4 * scale, equal_nan=True):
            return (
                "the pruned model computes something else than the masked one (its channels are reshaped, "
                "e.g. into attention heads, in a way channel removal cannot follow)"
            )
    return None


def check_groups(
    model: nn.Module, groups: list[ChannelGroup], example: tuple[tuple[Any, ...], dict[str, Any]]
) -> tuple[list[ChannelGroup], list[SkippedLayers]]:
    """The groups whose removal keeps the model's outputs, and the others with the reason.

    All groups are tried together first (one pass for a model torch-pruning understands), then
    one by one when that fails."""
    example = _random_like(example)
    if not groups or _failure(model, groups, example) is None:
        return groups, []
    good: list[ChannelGroup] = []
    skipped: list[SkippedLayers] = []
    for group in groups:
        reason = _failure(model, [group], example)
        if reason is None:
            good.append(group)
        else:
            skipped.append(SkippedLayers(sorted(set(group.producer_names)), reason))
    if good and (reason := _failure(model, good, example)) is not None:
        # each group is fine alone, together they are not: leave them all whole rather than guess
        skipped.append(SkippedLayers(sorted({n for g in good for n in g.producer_names}), reason))
        good = []
    return good, skipped
