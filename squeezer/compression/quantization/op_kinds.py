"""What an fx node is to quantizer placement: which inputs it quantizes, whether it preserves the scale
of what it reads (reshape, transpose, max-pool, concat) and the shapes of split and concat placement
treats apart. NNCF's op classes; onnxruntime's extra ones are in onnxruntime_rules.py."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from squeezer.compression.graph.modules import is_user_registered, is_weighted_for
from squeezer.compression.graph.trace import tensor_meta

_CONV_LIKE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_QUANT_INPUT_MODULES = (
    *_CONV_LIKE,
    nn.Linear,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
_AGNOSTIC_MODULES = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.Flatten,
    nn.Identity,
    nn.ZeroPad2d,
    nn.Unflatten,
)

# ReLU as a graph calls it: `F.relu(x)`, `torch.relu(x)`, and in place, as a lifted `.pt2` archive's
# ReLU(inplace=True) (graph/lift.py: aten.relu_ -> torch.relu_)
RELU_FUNCTIONS: frozenset[Any] = frozenset({F.relu, F.relu_, torch.relu, torch.relu_})

_PRODUCT_FUNCS = {operator.mul, torch.mul}


def is_product(node: fx.Node) -> bool:
    """`a * b`, `torch.mul(a, b)` or `a.mul(b)`."""
    return (node.op == "call_function" and node.target in _PRODUCT_FUNCS) or (
        node.op == "call_method" and node.target == "mul"
    )


_ONE_INPUT_FUNCS = {
    F.conv1d,
    F.conv2d,
    F.conv3d,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.linear,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    torch.mean,
}
_TWO_INPUT_FUNCS = {operator.add, operator.iadd, torch.add, operator.matmul, torch.matmul, torch.bmm}
_AGNOSTIC_FUNCS = {
    torch.flatten,
    torch.reshape,
    torch.transpose,
    torch.permute,
    torch.squeeze,
    torch.unsqueeze,
    F.dropout,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    torch.cat,
    torch.concat,
    F.pad,
    operator.getitem,
    torch.unbind,
}
_ATTENTION_INPUTS = ("query", "key", "value")
_ONE_INPUT_METHODS = {"mean"}
_TWO_INPUT_METHODS = {"add", "add_", "matmul", "bmm"}
_AGNOSTIC_METHODS = {
    "view",
    "reshape",
    "flatten",
    "transpose",
    "permute",
    "squeeze",
    "unsqueeze",
    "contiguous",
    "expand",
    "repeat",
    "unbind",
}


def activation_ports(node: fx.Node, modules: dict[str, nn.Module]) -> list[int]:
    """Input ports of `node` whose activations should be quantized (empty: not quantizable)."""
    if node.op == "call_module":
        m = modules[str(node.target)]
        if isinstance(m, nn.MultiheadAttention):
            return [0, 1, 2]  # query, key, value: each feeds an in-projection matmul
        if isinstance(m, _QUANT_INPUT_MODULES) or (is_user_registered(m) and is_weighted_for(m, "quantization")):
            return [0]
        return []
    if node.op == "call_function":
        if node.target in _ONE_INPUT_FUNCS:
            return [0]
        if node.target in _TWO_INPUT_FUNCS:
            return [0, 1]
    if node.op == "call_method":
        if node.target in _ONE_INPUT_METHODS:
            return [0]
        if node.target in _TWO_INPUT_METHODS:
            return [0, 1]
    return []


def port_args(node: fx.Node, ports: list[int], modules: dict[str, nn.Module]) -> list[Any]:
    """The arguments at `ports`; nn.MultiheadAttention's query / key / value also when passed by keyword."""
    args = [node.args[i] for i in ports if i < len(node.args)]
    if node.op == "call_module" and isinstance(modules[str(node.target)], nn.MultiheadAttention):
        args += [node.kwargs[k] for k in _ATTENTION_INPUTS[len(node.args) :] if k in node.kwargs]
    return args


def is_agnostic(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Ops that keep the scale of what they read (reshape, max-pool, concat, ...): placement looks past them."""
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _AGNOSTIC_MODULES)
    if node.op == "call_function":
        return node.target in _AGNOSTIC_FUNCS
    if node.op == "call_method":
        return node.target in _AGNOSTIC_METHODS
    return False


_PASSTHROUGH_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def is_passthrough(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Ops that return their input unchanged at inference: no second quantize call is needed after them."""
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _PASSTHROUGH_MODULES)
    return (node.op == "call_function" and node.target is F.dropout) or (
        node.op == "call_method" and node.target == "contiguous"
    )


_LAYOUT_FUNCS = {torch.reshape, torch.transpose, torch.permute, torch.squeeze, torch.unsqueeze}
_LAYOUT_METHODS = {"view", "reshape", "transpose", "permute", "squeeze", "unsqueeze"}


def is_layout_change(node: fx.Node) -> bool:
    """Reshape, transpose, squeeze: ops that export as ONNX Reshape / Transpose / Squeeze / Unsqueeze, which
    both runtimes carry a dequantization through (onnxruntime's QDQ propagation, OpenVINO's low-precision
    transformations), so the consumer after them needs no second quantize call. Not `flatten(x, 1)`, which
    exports as Flatten (onnxruntime does not propagate through it), nor max-pool or indexing."""
    return (node.op == "call_function" and node.target in _LAYOUT_FUNCS) or (
        node.op == "call_method" and node.target in _LAYOUT_METHODS
    )


def is_tensor(node: fx.Node) -> bool:
    return tensor_meta(node) is not None


def reads_activations(node: fx.Node, ports: list[int]) -> bool:
    """False for a two-input op with a constant side (x + 1, x @ W with W a parameter): placement
    quantizes only activation-activation ones."""
    if len(ports) != 2:
        return True
    args = [node.args[i] for i in ports if i < len(node.args)]
    return all(isinstance(a, fx.Node) and is_tensor(a) and a.op != "get_attr" for a in args)


def is_part_of_split(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """`chunk(x)[i]`, `split(x)[i]`: a tensor taken from an op (not scale-preserving as placed, such as
    `unbind`) that returns a tuple of tensors."""
    source = node.args[0] if node.target is operator.getitem and node.args else None
    return (
        isinstance(source, fx.Node)
        and source.op in ("call_function", "call_method")
        and is_tensor(node)
        and not is_tensor(source)
        and not is_agnostic(source, modules)
    )


def is_concat(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in (torch.cat, torch.concat)


def is_behind_concat(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """`node` is a concat's output through reshapes / transposes (ShuffleNet's channel shuffle): the halves
    of a split of it take the concat's quantizer (as quantize_static's file does), so the next block's
    split and convs read int8 without a requantization."""
    while not is_concat(node):
        source = node.args[0] if node.args else None
        if not is_agnostic(node, modules) or node.target is operator.getitem or not isinstance(source, fx.Node):
            return False
        node = source
    return True
