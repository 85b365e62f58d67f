"""SiLU and Hardswish written out as `x * sigmoid(x)` and `x * hardsigmoid(x)` in the traced graph.

onnxruntime's QDQ fusions see a SiLU as the Sigmoid and Mul the ONNX export makes of it; they run
them as QLinearSigmoid / QLinearMul only when the sigmoid's output is quantized too, which a
quantizer after the whole SiLU module cannot do. Written out, the gate and the product are two graph
nodes that placement quantizes like onnxruntime's `quantize_static` does (EfficientNet-B0 and
MobileNetV3 measured in bench/bench_placement.py). Used for `"target_runtime": "onnxruntime"` only:
OpenVINO fuses the whole activation into the conv before it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from squeezer.compression.graph.trace import function_of

_GATE_OF_MODULE: dict[type[nn.Module], Callable[..., torch.Tensor]] = {
    nn.SiLU: torch.sigmoid,
    nn.Hardswish: F.hardsigmoid,
}
_GATE_OF_FUNCTION: dict[object, Callable[..., torch.Tensor]] = {
    F.silu: torch.sigmoid,
    F.hardswish: F.hardsigmoid,
}


def _gate_of(node: fx.Node, modules: dict[str, nn.Module]) -> Callable[..., torch.Tensor] | None:
    if node.op == "call_module":
        return _GATE_OF_MODULE.get(type(modules[str(node.target)]))
    if node.op == "call_function":
        return _GATE_OF_FUNCTION.get(function_of(node))
    return None


def split_gated_activations(gm: fx.GraphModule) -> int:
    """Replace each SiLU / Hardswish call by a gate node and a product node; returns how many.

    The new nodes keep the call's module stack (so their scope names sit under the activation's
    module) and its shape metadata (gate, input and product have one shape)."""
    modules = dict(gm.named_modules())
    count = 0
    for node in list(gm.graph.nodes):
        gate = _gate_of(node, modules)
        if gate is None or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        x = node.args[0]
        with gm.graph.inserting_before(node):
            gated = gm.graph.call_function(gate, (x,))
            product = gm.graph.call_function(operator.mul, (x, gated))
        for new in (gated, product):
            new.meta = dict(node.meta)
        node.replace_all_uses_with(product)
        gm.graph.erase_node(node)
        count += 1
    if count:
        gm.graph.lint()
        gm.recompile()
    return count
