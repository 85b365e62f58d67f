"""FLOPs of the weighted layers, measured by running the model once with forward hooks.

Hooks see every call of a layer whether or not torch.fx could trace the model (Hugging Face
models mostly cannot), and Hugging Face's `Conv1D` (GPT-2's every projection) is counted too.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from squeezer.compression.graph.surgery import original_weight
from squeezer.compression.pruning.channel_group import PRUNABLE, is_conv1d

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def weighted(module: nn.Module) -> bool:
    """The layers FLOPs and parameters are counted for."""
    return isinstance(module, PRUNABLE) or is_conv1d(module)


def layer_flops(model: nn.Module, example: tuple[tuple[Any, ...], dict[str, Any]]) -> dict[str, int]:
    """2 x output positions x kernel size per (output channel x input channel/group), summed over
    the calls of each layer for one sample."""
    work = copy.deepcopy(model).eval()
    args, kwargs = example
    batch = next((int(a.shape[0]) for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.dim()), 1)
    flops: dict[str, int] = {}

    def hook(name: str, module: nn.Module, out: Any) -> None:
        if isinstance(out, tuple):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            return
        w = original_weight(module)
        kernel = w[0, 0].numel() if isinstance(module, CONVS) else 1
        positions = math.prod(out.shape[2:]) if isinstance(module, CONVS) else math.prod(out.shape[:-1]) // batch
        flops[name] = flops.get(name, 0) + 2 * positions * kernel

    handles = [
        module.register_forward_hook(lambda m, _, out, name=name: hook(name, m, out))
        for name, module in work.named_modules()
        if weighted(module)
    ]
    try:
        with torch.no_grad():
            work(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return flops
