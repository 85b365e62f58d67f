"""Extra quantizers for `"target_runtime": "onnxruntime"`: the inputs onnxruntime's QDQ fusions need.

onnxruntime turns DequantizeLinear -> op -> QuantizeLinear into an integer kernel (QLinearConv,
QLinearSigmoid, QLinearMul, ...) only when the op's inputs come from a DequantizeLinear and its
output goes to a QuantizeLinear; otherwise it runs the op in FP32 between a dequantize and a quantize,
and the NHWC integer kernels around it need a Transpose each way. NNCF's placement quantizes only
where a conv / linear / add reads, so on EfficientNet-B0 a third of the convs, every SiLU and the
squeeze-excitation blocks ran that way (0.73x of FP32 speed; onnxruntime's own `quantize_static`,
which quantizes every op's inputs, 1.51x). With these rules (and SiLU / Hardswish written out as
`x * gate(x)`, gated_activations.py) Squeezer's optimized graph has the same integer kernels as
`quantize_static`'s. Measured side by side with `bench/bench_placement.py` (docs/benchmarks.md has the table).
OpenVINO fuses these patterns itself and is slower with the extra quantizers (EfficientNet-B0 1.65x
-> 1.07x of FP32), hence a target runtime and not the default.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from squeezer.compression.graph.trace import function_of, tensor_meta
from squeezer.compression.quantization.op_kinds import RELU_FUNCTIONS, is_product

# Their input (a conv's output) quantized: the conv runs as QLinearConv, and a Sigmoid between a
# dequantize and a quantize runs as QLinearSigmoid. (Hardsigmoid has no integer kernel and stays FP32
# between the two, as in `quantize_static`'s file.)
_GATE_MODULES = (nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Hardsigmoid, nn.Mish)
_GATE_FUNCS = {F.silu, F.hardswish, torch.sigmoid, F.sigmoid, F.hardsigmoid, F.mish}


def _is_gate(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _GATE_MODULES)
    return node.op == "call_function" and function_of(node) in _GATE_FUNCS


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
    if is_product(node):  # a squeeze-excitation gate times its feature map, a written-out SiLU (QLinearMul)
        return [0, 1]  # only where both are activations: placement skips x * constant
    return []


_RELU_MODULES = (nn.ReLU, nn.ReLU6)
_RELU_FUNCS = {*RELU_FUNCTIONS, F.relu6}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}


def _is_two_tensor_add(node: fx.Node) -> bool:
    is_add = (node.op == "call_function" and node.target in _ADD_FUNCS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )
    args = node.args[:2]
    return (
        is_add
        and len(args) == 2
        and all(isinstance(a, fx.Node) and a.op != "get_attr" and tensor_meta(a) is not None for a in args)
    )


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _RELU_MODULES)
    return node.op == "call_function" and node.target in _RELU_FUNCS


def reads_shape(node: fx.Node) -> bool:
    """`x.size()`, `x.dim()`, `x.shape`: a reader of the tensor's shape, not its values."""
    return (node.op == "call_method" and node.target in ("size", "dim")) or (
        node.op == "call_function" and node.target is getattr
    )


def float_adds(
    gm: fx.GraphModule,
    modules: dict[str, nn.Module],
    quantizes_input: Callable[[fx.Node], bool],
    passes_scale: Callable[[fx.Node], bool],
) -> set[fx.Node]:
    """The `a + b` of two activations that onnxruntime would run in FP32 anyway: those whose sum is read by
    something that does not quantize it (a LayerNorm, a softmax, the output), directly or through
    scale-preserving ops and a ReLU. onnxruntime emits QLinearAdd only when every reader of the sum is a
    QuantizeLinear; otherwise each quantized input is a QuantizeLinear -> DequantizeLinear pair of pure
    cost. That is every residual and embedding sum of a transformer (BERT: 10 of the 16 QuantizeLinear
    nodes of its INT8 graph) and none of a CNN's (ResNet's sums feed a ReLU, then convs and the next sum).
    Leaving them FP32 is also more accurate: the residual stream's outliers (MiniLM: +-388) set the
    scale that every small value of the sum is rounded to. Computed to a fixed point: a sum read only
    by an FP32 sum is not quantized either."""
    adds = {n for n in gm.graph.nodes if _is_two_tensor_add(n)}
    floats: set[fx.Node] = set()

    def readers_quantize(node: fx.Node, seen: set[fx.Node]) -> bool:
        for user in node.users:
            if user in seen or reads_shape(user):
                continue
            seen.add(user)
            if user in adds:
                if user in floats:
                    return False
            elif passes_scale(user) or _is_relu(user, modules):
                if not readers_quantize(user, seen):
                    return False
            elif not quantizes_input(user):
                return False
        return True

    changed = True
    while changed:
        changed = False
        for add in adds - floats:
            if not readers_quantize(add, {add}):
                floats.add(add)
                changed = True
    return floats
