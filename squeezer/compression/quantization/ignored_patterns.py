"""Subgraphs that post-training quantization leaves in FP32 whatever the scopes say (NNCF 3.x's ignored
patterns); the quantization section's `ignored_patterns` names them.

"se_block": a squeeze-and-excitation gate, `x * sigmoid(fc2(act(fc1(mean(x)))))`. Its two layers run on
1x1 maps, so quantizing them saves nothing, and the quantizers around them keep OpenVINO from fusing the
gate: EfficientNet-B0 at 224x224 ran 1.28x FP32 in OpenVINO with them quantized, 1.49x without. The
mean (and any reshape after it) stays FP32 too: it feeds only the FP32 layer, so a quantizer on its input
bought nothing and split the tensor that the product also reads, which kept OpenVINO from fusing that
quantizer into the layer before (MobileNetV3-small: 1.19x FP32 with it, 1.31x without; NNCF's IR 1.30x).
The product stays quantizable, as in NNCF.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from squeezer.compression.graph.trace import function_of
from squeezer.compression.quantization.op_kinds import is_product

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_GATE_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
_GATE_FUNCS: set[Any] = {torch.sigmoid, F.sigmoid, F.hardsigmoid}
_MEAN_MODULES = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_MEAN_FUNCS: set[Any] = {torch.mean, "mean", F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d}
_RESHAPES: set[Any] = {torch.flatten, torch.reshape, "flatten", "reshape", "view"}


def _module(node: fx.Node, modules: dict[str, nn.Module]) -> nn.Module | None:
    return modules.get(str(node.target)) if node.op == "call_module" else None


def _is(node: Any, modules: dict[str, nn.Module], module_types: tuple[type, ...], funcs: set[Any]) -> bool:
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_module":
        return isinstance(_module(node, modules), module_types)
    if node.op == "call_method":
        return node.target in funcs
    return node.op == "call_function" and function_of(node) in funcs


def _only_input(node: fx.Node) -> fx.Node | None:
    """The one tensor a single-input op reads (None for anything else)."""
    inputs = [a for a in node.args if isinstance(a, fx.Node)]
    return inputs[0] if len(inputs) == 1 and len(node.users) == 1 else None


def _se_block(mul: fx.Node, modules: dict[str, nn.Module]) -> list[fx.Node]:
    """The gate's nodes to leave in FP32 if `mul` multiplies a tensor by its squeeze-and-excitation gate."""
    args = [a for a in mul.args if isinstance(a, fx.Node)]
    if len(args) != 2:
        return []
    for gate, x in (args, args[::-1]):
        if not _is(gate, modules, _GATE_MODULES, _GATE_FUNCS):
            continue
        second = _only_input(gate)
        act = _only_input(second) if second is not None and _is(second, modules, _LAYERS, set()) else None
        first = _only_input(act) if act is not None and not _is(act, modules, _LAYERS, set()) else None
        if first is None or not _is(first, modules, _LAYERS, set()):
            continue
        squeeze = [_only_input(first)]
        while squeeze[-1] is not None and _is(squeeze[-1], modules, (nn.Flatten,), _RESHAPES):
            squeeze.append(_only_input(squeeze[-1]))
        mean = squeeze[-1]
        if mean is not None and _is(mean, modules, _MEAN_MODULES, _MEAN_FUNCS) and mean.args[0] is x:
            return [*squeeze, first, act, second, gate]  # type: ignore[list-item]
    return []


def ignored_nodes(gm: fx.GraphModule, modules: dict[str, nn.Module], patterns: list[str]) -> set[fx.Node]:
    """The nodes of `gm` inside any of `patterns`; placement gives them neither weight nor input quantizers."""
    nodes: set[fx.Node] = set()
    if "se_block" in patterns:
        for node in gm.graph.nodes:
            if is_product(node):
                nodes.update(_se_block(node, modules))
    return nodes
