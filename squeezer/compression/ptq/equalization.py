"""Cross-layer equalization (Nagel et al., 2019): even out the per-channel ranges of two consecutive layers.

When layer 1's output channel i reaches layer 2 only through operations that commute with a positive
per-channel scale (ReLU, LeakyReLU, max pooling, identity), dividing layer 1's row i (and bias) by s_i
and multiplying layer 2's input channel i by s_i leaves the FP32 function unchanged. With
s_i = sqrt(r1_i / r2_i) both layers' channel ranges become sqrt(r1_i * r2_i), so one outlier channel
no longer takes the per-tensor activation grid between them (a channel 1000x the others costs a
network its accuracy under plain PTQ; after equalization it costs nothing).
"""

from __future__ import annotations

import logging
from typing import cast

import torch
import torch.nn.functional as F
from torch import fx, nn

from squeezer.compression.graph.surgery import original_weight
from squeezer.compression.quantization.op_kinds import RELU_FUNCTIONS
from squeezer.compression.quantization.placement import ACTIVATIONS_ATTR

logger = logging.getLogger(__name__)

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_SCALE_COMMUTING_MODULES = (nn.ReLU, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Identity, nn.Dropout)
_SCALE_COMMUTING_FUNCTIONS = {*RELU_FUNCTIONS, F.leaky_relu, F.max_pool1d, F.max_pool2d, F.max_pool3d}


def _commutes(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        target = str(node.target)
        return target.startswith(ACTIVATIONS_ATTR + ".") or isinstance(modules[target], _SCALE_COMMUTING_MODULES)
    return node.op == "call_function" and node.target in _SCALE_COMMUTING_FUNCTIONS


def _next_layer(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The one layer that reads `node`'s output through scale-commuting single-reader ops, if any."""
    current = node
    while len(current.users) == 1:
        (user,) = current.users
        if user.op == "call_module" and isinstance(modules.get(str(user.target)), _LAYERS):
            return user if user.args and user.args[0] is current else None
        if not _commutes(user, modules) or user.args[0] is not current:
            return None
        current = user
    return None


def _pairs(gm: fx.GraphModule, eligible: set[str]) -> list[tuple[nn.Module, nn.Module, str, str]]:
    modules = dict(gm.named_modules())
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or str(node.target) not in eligible:
            continue
        first = modules[str(node.target)]
        after = _next_layer(node, modules)
        if after is None or str(after.target) not in eligible:
            continue
        second = modules[str(after.target)]
        if getattr(first, "groups", 1) != 1 or getattr(second, "groups", 1) != 1:
            continue  # depthwise and grouped layers: the channel correspondence is not one to one
        if original_weight(first).shape[0] != original_weight(second).shape[1]:
            continue  # a flatten between them (conv -> linear) changes what an input channel is
        pairs.append((first, second, str(node.target), str(after.target)))
    return pairs


def equalize(gm: fx.GraphModule, eligible: set[str]) -> list[str]:
    """Equalize every eligible pair of layers (module paths in `eligible`); returns "first->second" names."""
    done = []
    for first, second, name1, name2 in _pairs(gm, eligible):
        w1, w2 = original_weight(first), original_weight(second)
        r1 = w1.detach().abs().reshape(w1.shape[0], -1).amax(1)
        r2 = w2.detach().abs().transpose(0, 1).reshape(w2.shape[1], -1).amax(1)
        if bool((r1 <= 0).any()) or bool((r2 <= 0).any()):
            continue
        s = (r1 / r2).sqrt()
        with torch.no_grad():
            w1.div_(s.reshape(-1, *([1] * (w1.dim() - 1))))
            if getattr(first, "bias", None) is not None:
                cast(torch.Tensor, first.bias).div_(s)
            w2.mul_(s.reshape(1, -1, *([1] * (w2.dim() - 2))))
        done.append(f"{name1}->{name2}")
    if done:
        logger.info("cross-layer equalization: %d layer pairs", len(done))
    return done
