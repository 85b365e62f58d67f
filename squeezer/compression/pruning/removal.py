"""Physical channel removal: pruned filters leave the weights, so the model really shrinks.

Every tensor tied to a removed channel is sliced: the layer's weight and bias, the stored weight
under a parametrization and the per-channel tensors of its parametrizations (sparsity masks,
per-channel quantizer ranges), BatchNorm statistics, and the matching input channels of the
consumers. Works on a copy of the compressed model, before or after `strip()`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize
from torch.nn.utils import parametrize

from squeezer.compression.graph.surgery import original_weight
from squeezer.compression.pruning.channel_group import NORMS, ChannelGroup, in_axis, out_axis
from squeezer.compression.quantization.quantizer import FakeQuantizer


def _slice_attrs(owner: nn.Module, axis: int, keep: torch.Tensor, size: int, only: str | None = None) -> None:
    """Slice every parameter/buffer of `owner` (or just `only`) that spans `size` entries along `axis`."""
    for store in (owner._parameters, owner._buffers):
        for name, t in list(store.items()):
            if t is None or t.dim() <= axis or t.shape[axis] != size or (only is not None and name != only):
                continue
            sliced = t.detach().index_select(axis, keep.to(t.device)).clone()
            if isinstance(t, nn.Parameter):
                setattr(owner, name, nn.Parameter(sliced, requires_grad=t.requires_grad))
            else:
                owner._buffers[name] = sliced
    if isinstance(owner, FakeQuantizer) and owner.spec.scale_shape[axis : axis + 1] == (size,):
        shape = list(owner.spec.scale_shape)
        shape[axis] = len(keep)
        owner.spec = dataclasses.replace(owner.spec, scale_shape=tuple(shape))


def _slice_param(module: nn.Module, name: str, axis: int, keep: torch.Tensor) -> None:
    """Slice `module.<name>` (plain or parametrized) along `axis`."""
    if parametrize.is_parametrized(module, name):
        plist = cast(Any, module).parametrizations[name]
        size = plist.original.shape[axis]
        _slice_attrs(plist, axis, keep, size)
        for p in plist:
            # per-tensor quantizer ranges and per-output-channel ranges of an input slice stay as they are
            if not (isinstance(p, FakeQuantizer | FakeQuantize) and axis != _channel_axis(p)):
                _slice_attrs(p, axis, keep, size)
        return
    t = getattr(module, name, None)
    if isinstance(t, torch.Tensor):
        _slice_attrs(module, axis, keep, t.shape[axis], only=name)


def _channel_axis(q: nn.Module) -> int | None:
    if isinstance(q, FakeQuantizer):
        return q.axis
    if isinstance(q, FakeQuantize):
        return q.ch_axis if q.is_per_channel else None
    return None


def _remove_outputs(module: nn.Module, keep: torch.Tensor) -> None:
    axis = out_axis(module)
    depthwise = isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and module.groups == module.in_channels > 1
    _slice_param(module, "weight", axis, keep)
    _slice_param(module, "bias", 0, keep)
    if isinstance(module, nn.Linear):
        module.out_features = len(keep)
    else:
        module.out_channels = len(keep)  # type: ignore[assignment]
        if depthwise:
            module.in_channels = module.groups = len(keep)  # type: ignore[assignment]


def _remove_inputs(module: nn.Module, keep: torch.Tensor) -> None:
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and module.groups == module.in_channels > 1:
        return  # depthwise: its inputs are its outputs, removed with its group
    _slice_param(module, "weight", in_axis(module), keep)
    if isinstance(module, nn.Linear):
        module.in_features = len(keep)
    else:
        module.in_channels = len(keep)  # type: ignore[assignment]


def _remove_norm(module: nn.Module, keep: torch.Tensor) -> None:
    norm = cast(nn.modules.batchnorm._BatchNorm, module)
    for name in ("weight", "bias", "running_mean", "running_var"):
        _slice_param(norm, name, 0, keep)
    norm.num_features = len(keep)


def remove_channels(model: nn.Module, groups: list[ChannelGroup], masks: dict[int, torch.Tensor]) -> int:
    """Cut the channels whose group mask is 0 out of `model` in place; returns how many went."""
    removed = 0
    # a consumer or norm behind a concatenation belongs to several groups: its keep masks are
    # gathered over all of them first and it is sliced once, in its original channel numbering
    in_keep: dict[str, torch.Tensor] = {}
    norm_keep: dict[str, torch.Tensor] = {}
    for group in groups:
        mask = masks[group.id]
        if bool(mask.bool().all()):
            continue
        removed += int((mask == 0).sum())
        for member in group.producers:
            module = model.get_submodule(member.name)
            size = int(original_weight(module).shape[out_axis(module)])
            _remove_outputs(module, torch.nonzero(member.keep_mask(mask, size)).flatten())
        for member in group.norms:
            norm = model.get_submodule(member.name)
            if isinstance(norm, NORMS):
                current = norm_keep.get(member.name, torch.ones(norm.num_features))
                norm_keep[member.name] = current * member.keep_mask(mask, current.numel())
        for member in group.consumers:
            consumer = model.get_submodule(member.name)
            current = in_keep.get(member.name, torch.ones(_input_size(consumer)))
            in_keep[member.name] = current * member.keep_mask(mask, current.numel())
    for name, keep_mask in norm_keep.items():
        _remove_norm(model.get_submodule(name), torch.nonzero(keep_mask).flatten())
    for name, keep_mask in in_keep.items():
        _remove_inputs(model.get_submodule(name), torch.nonzero(keep_mask).flatten())
    return removed


def _input_size(module: nn.Module) -> int:
    return int(original_weight(module).shape[in_axis(module)])
