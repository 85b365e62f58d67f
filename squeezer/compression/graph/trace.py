"""Capture a model as a `torch.fx` graph and give every operation its NNCF-style scope name.

fx keeps submodules (so `.train()`/`.eval()` and state-dict names keep working) and shows
functional ops (`x + y`, `torch.cat`, `F.relu`, `matmul`), which quantizer placement needs.
Names look like `Net/Block[block2]/Conv2d[conv]/conv2d_0`; NNCF's wrapped-class spelling
(`NNCFConv2d[conv]`) is accepted as an alias when scopes are matched.
"""

from __future__ import annotations

import operator
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from squeezer.compression.graph.modules import NORM_LAYERS, WEIGHTED_LAYERS, is_user_registered
from squeezer.compression.graph.surgery import evaluating

# Module classes NNCF wraps (and so renames `NNCF<Class>` in its scope names).
NNCF_WRAPPED = (*WEIGHTED_LAYERS, *NORM_LAYERS)

_MODULE_OPS: dict[type, str] = {
    nn.Conv1d: "conv1d",
    nn.Conv2d: "conv2d",
    nn.Conv3d: "conv3d",
    nn.ConvTranspose1d: "conv_transpose1d",
    nn.ConvTranspose2d: "conv_transpose2d",
    nn.ConvTranspose3d: "conv_transpose3d",
    nn.Linear: "linear",
    nn.BatchNorm1d: "batch_norm",
    nn.BatchNorm2d: "batch_norm",
    nn.BatchNorm3d: "batch_norm",
    nn.GroupNorm: "group_norm",
    nn.LayerNorm: "layer_norm",
    nn.Embedding: "embedding",
    nn.EmbeddingBag: "embedding_bag",
    nn.ReLU6: "hardtanh",
    nn.Hardtanh: "hardtanh",
    nn.AdaptiveAvgPool1d: "adaptive_avg_pool1d",
    nn.AdaptiveAvgPool2d: "adaptive_avg_pool2d",
    nn.AdaptiveAvgPool3d: "adaptive_avg_pool3d",
    nn.AvgPool1d: "avg_pool1d",
    nn.AvgPool2d: "avg_pool2d",
    nn.AvgPool3d: "avg_pool3d",
    nn.MaxPool1d: "max_pool1d",
    nn.MaxPool2d: "max_pool2d",
    nn.MaxPool3d: "max_pool3d",
    nn.Dropout: "dropout",
    nn.Dropout2d: "dropout2d",
    nn.Flatten: "flatten",
    nn.Softmax: "softmax",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.Hardswish: "hardswish",
    nn.Hardsigmoid: "hardsigmoid",
    nn.Identity: "identity",
}

_OPERATORS: dict[Any, str] = {
    operator.add: "__add__",
    operator.iadd: "__iadd__",
    operator.mul: "__mul__",
    operator.imul: "__imul__",
    operator.sub: "__sub__",
    operator.truediv: "__truediv__",
    operator.matmul: "matmul",
    operator.getitem: "__getitem__",
    operator.neg: "__neg__",
}


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def function_of(node: fx.Node) -> Any:
    """The function a call_function node calls, seen through the in-place wrappers of a lifted archive
    (graph/lift.py: `hardswish_` lifts to a function that calls F.hardswish(x, inplace=True)), so tables
    keyed by F.hardswish know both; a node of another kind: its target."""
    return getattr(node.target, "__wrapped__", node.target) if node.op == "call_function" else node.target


def op_name_of(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """The traced-function name NNCF would give this node (`conv2d`, `relu_`, `__add__`, `cat`)."""
    if node.op == "call_module":
        module = modules[str(node.target)]
        if isinstance(module, nn.ReLU):
            return "relu_" if module.inplace else "relu"
        for cls in type(module).__mro__:
            if cls in _MODULE_OPS:
                return _MODULE_OPS[cls]
        return _camel_to_snake(type(module).__name__)
    if node.op == "call_function":
        if node.target in _OPERATORS:
            return _OPERATORS[node.target]
        if isinstance(node.target, torch._ops.OpOverload):  # aten.hardswish_.default -> hardswish_
            name = node.target.overloadpacket.__name__
        else:  # a scope name is a module name in the compressed model: no dots
            name = getattr(node.target, "__name__", str(node.target)).replace(".", "_")
        if node.kwargs.get("inplace"):
            name += "_"
        return name
    if node.op == "call_method":
        return str(node.target)
    return node.op


@dataclass
class TracedGraph:
    """A traced model plus the scope name of every operation node."""

    gm: fx.GraphModule
    names: dict[fx.Node, str] = field(default_factory=dict)
    nncf_names: dict[fx.Node, str] = field(default_factory=dict)

    @property
    def modules(self) -> dict[str, nn.Module]:
        return dict(self.gm.named_modules())

    def node_by_name(self, name: str) -> fx.Node:
        for node, n in self.names.items():
            if n == name:
                return node
        raise KeyError(name)

    def all_names(self) -> list[str]:
        return list(self.names.values())


class _Tracer(fx.Tracer):
    """Treats user-registered modules (`register_module`) as leaves, like torch.nn layers, and so every
    BatchNorm subclass (timm's BatchNormAct2d): traced through, its `if self.training` would be baked
    into the graph, and a model compressed in train mode would normalize with batch statistics at
    inference too (random EfficientNet-Lite0: eval outputs moved by 3.6 with the batch)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            is_user_registered(m)
            or isinstance(m, nn.modules.batchnorm._BatchNorm)
            or super().is_leaf_module(m, module_qualified_name)
        )


def _drop_specialized_inputs(graph: fx.Graph) -> None:
    """fx keeps a specialized argument as an input checked by an assert (`_assert_is_none(x)`,
    `_assert(x == False)`); the model is only ever called without it, and the ONNX exporter would feed
    it as a tensor and cannot export the check. Drop the checks and the inputs nothing else reads."""
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is fx._symbolic_trace._assert_is_none:
            graph.erase_node(node)
        elif node.target is torch._assert and isinstance(node.args[0], fx.Node):
            check = node.args[0]
            graph.erase_node(node)
            reads_an_input = isinstance(check.args[0], fx.Node) and check.args[0].op == "placeholder"
            if check.target is operator.eq and not check.users and reads_an_input:
                graph.erase_node(check)
    for node in list(graph.nodes):
        if node.op == "placeholder" and not node.users and node.args:  # a default: a specialized input
            graph.erase_node(node)


def trace(model: nn.Module, concrete_args: dict[str, Any] | None = None) -> fx.GraphModule:
    """Symbolically trace `model`; raises the tracer's error if the model has dynamic control flow.

    Traced in eval mode: a custom module's `if self.training` branch (timm's DropPath) is baked into
    the graph as traced, and only the inference branch is right at inference; torch's own layers
    (Dropout, BatchNorm) are leaves and keep switching with train()/eval()."""
    tracer = _Tracer()
    with evaluating(model):
        graph = tracer.trace(model, concrete_args=concrete_args)
    if concrete_args:
        _drop_specialized_inputs(graph)
    name = type(model).__name__
    gm = fx.GraphModule(tracer.root, graph, name)
    # GraphModule rebuilds the module tree from plain nn.Module stubs; put the user's own children
    # back so `model.features[0]`, custom methods and every state-dict key stay as they were.
    for child_name, child in model.named_children():
        setattr(gm, child_name, child)
    for pname, param in model._parameters.items():
        if param is not None and pname not in gm._parameters:
            gm.register_parameter(pname, param)
    for bname, buf in model._buffers.items():
        if buf is not None and bname not in gm._buffers:
            gm.register_buffer(bname, buf, persistent=bname not in model._non_persistent_buffers_set)
    return gm


def name_nodes(gm: fx.GraphModule, model_name: str) -> TracedGraph:
    """Assign `<Model>/<Class>[attr]/.../<op>_<k>` names in graph order (k counts per scope and op)."""
    modules = dict(gm.named_modules())
    counters: dict[tuple[str, str], int] = defaultdict(int)
    traced = TracedGraph(gm)
    n_inputs = n_outputs = 0
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            traced.names[node] = traced.nncf_names[node] = f"/nncf_model_input_{n_inputs}"
            n_inputs += 1
            continue
        if node.op == "output":
            traced.names[node] = traced.nncf_names[node] = f"/nncf_model_output_{n_outputs}"
            n_outputs += 1
            continue
        if node.op == "get_attr":
            continue
        scope = [model_name]
        nncf_scope = [model_name]
        for qualname, cls in (node.meta.get("nn_module_stack") or {}).values():
            attr = qualname.rsplit(".", 1)[-1]
            cls_name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]
            scope.append(f"{cls_name}[{attr}]")
            wrapped = isinstance(cls, type) and (issubclass(cls, NNCF_WRAPPED) or is_user_registered(cls))
            nncf_scope.append(f"{'NNCF' if wrapped else ''}{cls_name}[{attr}]")
        op = op_name_of(node, modules)
        prefix = "/".join(scope)
        k = counters[(prefix, op)]
        counters[(prefix, op)] += 1
        traced.names[node] = f"{prefix}/{op}_{k}"
        traced.nncf_names[node] = f"{'/'.join(nncf_scope)}/{op}_{k}"
    return traced


def first_layers(gm: fx.GraphModule, types: tuple[type[nn.Module], ...]) -> set[str]:
    """Modules of `types` reachable from a model input without passing another module of `types`."""
    modules = dict(gm.named_modules())
    first: set[str] = set()
    seen: set[fx.Node] = set()
    stack = [n for n in gm.graph.nodes if n.op == "placeholder"]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for user in node.users:
            if user.op == "call_module" and isinstance(modules.get(str(user.target)), types):
                first.add(str(user.target))
            else:
                stack.append(user)
    return first


def tensor_meta(node: fx.Node) -> torch.Size | None:
    meta = node.meta.get("tensor_meta")
    return getattr(meta, "shape", None)
