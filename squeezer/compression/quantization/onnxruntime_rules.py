"""Extra quantizers for `"target_runtime": "onnxruntime"`: the inputs onnxruntime's QDQ fusions need.

onnxruntime turns DequantizeLinear -> op -> QuantizeLinear into an integer kernel (QLinearConv,
QLinearSigmoid, QLinearMul, ...) only when the op's inputs come from a DequantizeLinear and its
output goes to a QuantizeLinear; otherwise it runs the op in FP32 between a dequantize and a quantize,
and the NHWC integer kernels around it need a Transpose each way. NNCF's placement quantizes only
where a conv / linear / add reads, so on EfficientNet-B0 a third of the convs, every SiLU and the
squeeze-excitation blocks ran that way (0.73x of FP32 speed; onnxruntime's own `quantize_static`,
which quantizes every op's inputs, 1.51x). With these rules (and SiLU / Hardswish written out as
`x * gate(x)`, gated_activations.py) Squeezer's optimized graph has the same integer kernels as
`quantize_static`'s. Measured side by side with `bench/bench_placement.py` (README has the table).
OpenVINO fuses these patterns itself and is slower with the extra quantizers (EfficientNet-B0 1.65x
-> 1.07x of FP32), hence a target runtime and not the default.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from squeezer.compression.graph.trace import tensor_meta

# Their input (a conv's output) quantized: the conv runs as QLinearConv, and a Sigmoid between a
# dequantize and a quantize runs as QLinearSigmoid. (Hardsigmoid has no integer kernel and stays FP32
# between the two, as in `quantize_static`'s file.)
_GATE_MODULES = (nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Hardsigmoid, nn.Mish)
_GATE_FUNCS = {F.silu, F.hardswish, torch.sigmoid, F.sigmoid, F.hardsigmoid, F.mish}
_PRODUCT_FUNCS = {operator.mul, torch.mul}


def _is_gate(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _GATE_MODULES)
    return node.op == "call_function" and node.target in _GATE_FUNCS


def _is_product(node: fx.Node) -> bool:
    """`a * b`: a squeeze-excitation gate times its feature map, a written-out SiLU (QLinearMul)."""
    return (node.op == "call_function" and node.target in _PRODUCT_FUNCS) or (
        node.op == "call_method" and node.target == "mul"
    )


def _is_feature_map_norm(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A LayerNorm over a 4-D map (ConvNeXt's, after the depthwise conv): its input quantized, that
    conv runs as QLinearConv (ConvNeXt-T 1.14x -> 2.0x of FP32). LayerNorms in sequence models are
    left as placed: they read residual sums, which are quantized already where an add reads them."""
    if node.op == "call_module":
        is_norm = isinstance(modules[str(node.target)], nn.LayerNorm)
    else:
        is_norm = node.op == "call_function" and node.target is F.layer_norm
    arg = node.args[0] if node.args else None
    shape = tensor_meta(arg) if isinstance(arg, fx.Node) else None
    return is_norm and shape is not None and len(shape) >= 4


def onnxruntime_ports(node: fx.Node, modules: dict[str, nn.Module]) -> list[int]:
    """Input ports of `node` to quantize for onnxruntime beyond NNCF's placement (empty: none)."""
    if _is_gate(node, modules) or _is_feature_map_norm(node, modules):
        return [0]
    if _is_product(node):
        return [0, 1]  # only where both are activations: placement skips x * constant
    return []
