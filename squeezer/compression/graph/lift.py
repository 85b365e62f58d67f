"""Turn a `torch.export` program back into a model that trains and can be compressed.

`ExportedProgram.module()` is a graph of aten ops with BatchNorm and dropout modes baked in
(`.train()`/`.eval()` raise) and no layer modules, so nothing can find a conv to quantize or
prune. Lifting replaces `aten.conv2d`/`linear`/`batch_norm`/`layer_norm`/`dropout` calls with real
`nn` modules holding the same parameters (named as in the original model), and the other aten
calls with the torch functions they come from. Each node keeps the module stack recorded at
export, so scope names are those of the original model.
"""

from __future__ import annotations

import importlib
import inspect
import operator
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.utils._pytree import tree_unflatten

from squeezer.compression.graph.modules import register_module
from squeezer.compression.graph.surgery import evaluating

aten = torch.ops.aten

# aten op -> the torch function with the same signature (positional args map one to one)
_FUNCTIONS: dict[Any, Callable[..., Any]] = {
    aten.relu.default: torch.relu,
    aten.relu_.default: torch.relu_,
    aten.add.Tensor: operator.add,
    aten.add_.Tensor: operator.iadd,
    aten.sub.Tensor: operator.sub,
    aten.mul.Tensor: operator.mul,
    aten.div.Tensor: operator.truediv,
    aten.matmul.default: torch.matmul,
    aten.bmm.default: torch.bmm,
    aten.cat.default: torch.cat,
    aten.flatten.using_ints: torch.flatten,
    aten.view.default: torch.reshape,
    aten.reshape.default: torch.reshape,
    aten.permute.default: torch.permute,
    aten.transpose.int: torch.transpose,
    aten.unsqueeze.default: torch.unsqueeze,
    aten.unbind.int: torch.unbind,
    aten.squeeze.dim: torch.squeeze,
    aten.softmax.int: torch.softmax,
    aten.sigmoid.default: torch.sigmoid,
    aten.tanh.default: torch.tanh,
    aten.gelu.default: F.gelu,
    aten.silu.default: F.silu,
    aten.hardswish.default: F.hardswish,
    aten.hardsigmoid.default: F.hardsigmoid,
    aten.scaled_dot_product_attention.default: F.scaled_dot_product_attention,
    # a size read from the input (transformers' masks) stays an int for the ONNX exporter's trace
    aten.arange.default: torch.arange,
    aten.hardtanh.default: F.hardtanh,
    aten.hardtanh_.default: F.hardtanh,
    aten.mean.dim: torch.mean,
    aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d,
    aten.adaptive_avg_pool1d.default: F.adaptive_avg_pool1d,
    aten.avg_pool2d.default: F.avg_pool2d,
    aten.max_pool2d.default: F.max_pool2d,
    aten.contiguous.default: torch.Tensor.contiguous,
    # x.size(d) stays symbolic when the model is traced again (ONNX export keeps the dynamic batch);
    # so do the ops that take it, when called as torch functions rather than as aten ops
    aten.sym_size.int: torch.Tensor.size,
    aten.expand.default: torch.Tensor.expand,
    aten.arange.start: torch.arange,
}


@register_module(ignored_algorithms=["filter_pruning"], target_weight_dim_for_compression=1)
class Addmm(nn.Module):
    """`bias + x @ weight` with the weight stored (in, out): Hugging Face's `Conv1D` (every projection
    of GPT-2) once exported. Lifted as a layer so its weight is quantized and sparsified like a Linear
    (per output channel, dim 1); pruning leaves it whole, as it does the original `Conv1D`."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter) -> None:
        super().__init__()
        self.weight = weight
        self.bias = bias
        self.nf = weight.shape[1]  # Conv1D's name for the output width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight)


def _inplace(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn(x, inplace=True)`, named like `fn`: the scope name of `nn.Hardswish(inplace=True)`'s op."""

    def apply(x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, fn(x, inplace=True))

    apply.__name__ = apply.__qualname__ = fn.__name__
    apply.__doc__ = f"{fn.__name__}(x, inplace=True)"
    apply.__wrapped__ = fn  # type: ignore[attr-defined]  # what placement's tables know it by (function_of)
    return apply


# in-place activations stay in place: a later node may read the tensor they modified
_FUNCTIONS.update(
    {
        aten.hardswish_.default: _inplace(F.hardswish),
        aten.hardsigmoid_.default: _inplace(F.hardsigmoid),
        aten.silu_.default: _inplace(F.silu),
    }
)


def _resolve_class(path: Any) -> Any:
    """`'torch.nn.modules.conv.Conv2d'` -> the class (for NNCF-style names); the string otherwise.

    The path comes from the upload, so only torch's own modules are ever imported for it: importing
    whatever an archive names would run that package's import-time code in the job (and transformers,
    say, imports torchvision, which may not even load). Other classes keep their dotted name, which
    is all that scope names need."""
    if isinstance(path, type) or not isinstance(path, str) or "." not in path:
        return path
    module_name, _, cls_name = path.rpartition(".")
    if not (module_name == "torch" or module_name.startswith("torch.")):
        return path
    try:
        return getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError):
        return path


def _ensure_parents(root: nn.Module, path: str, classes: dict[str, Any]) -> nn.Module:
    """Create the containers on the way to `path`, named after the original classes."""
    parent = root
    prefix = ""
    for part in path.split(".")[:-1]:
        prefix = f"{prefix}.{part}" if prefix else part
        child = getattr(parent, part, None)
        if child is None:
            cls = classes.get(prefix)
            name = cls.__name__ if isinstance(cls, type) else str(cls or "Module").rsplit(".", 1)[-1]
            child = type(name, (nn.Module,), {"__doc__": f"Container lifted from {cls}"})()
            parent.add_module(part, child)
        parent = child
    return parent


def _get_path(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


class _RebuildOutputs:
    """Flat outputs -> the structure export flattened (a tuple, a dict, a Hugging Face `ModelOutput`)."""

    def __init__(self, out_spec: Any) -> None:
        self.out_spec = out_spec

    def __call__(self, leaves: Any) -> Any:
        return tree_unflatten(list(leaves), self.out_spec)

    def __deepcopy__(self, memo: dict[int, Any]) -> _RebuildOutputs:
        return self  # immutable; copying a TreeSpec's LeafSpecs warns of a deprecation in torch 2.13


class _UnflattenOutputs(fx.graph.CodeGen):
    """Generated code that returns the outputs in their original structure: an output node holding
    the structure itself would be printed as a plain dict literal, and `out.logits` would fail."""

    def __init__(self, out_spec: Any) -> None:
        super().__init__()
        self.rebuild = _RebuildOutputs(out_spec)

    def generate_output(self, output_args: Any, *, descs: Any = None, repr_fn: Any = None) -> str:
        return f"return _squeezer_rebuild_outputs({(repr_fn or repr)(output_args)})"

    def additional_globals(self) -> list[tuple[str, Any]]:
        return [("_squeezer_rebuild_outputs", self.rebuild)]

    def process_outputs(self, outputs: Any) -> Any:
        return self.rebuild(outputs)


class _Lifter:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.old = gm
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.env: dict[fx.Node, Any] = {}
        self.params = dict(gm.named_parameters())
        self.buffers = dict(gm.named_buffers())
        self.classes: dict[str, Any] = {}
        self.constants: dict[str, torch.Tensor] = {}
        for node in gm.graph.nodes:
            for qualname, cls in (node.meta.get("nn_module_stack") or {}).values():
                self.classes.setdefault(qualname, cls)

    def tensor(self, node: Any) -> torch.Tensor | None:
        """The parameter or buffer a `get_attr` node reads (None for anything else)."""
        if not (isinstance(node, fx.Node) and node.op == "get_attr"):
            return None
        return self.by_name(str(node.target))

    def by_name(self, target: str) -> torch.Tensor | None:
        return self.params.get(target, self.buffers.get(target))

    def owner(self, *params: Any) -> str:
        """Module path of the layer that owns these parameters (`layer1.conv1.weight` -> `layer1.conv1`)."""
        node = next(p for p in params if isinstance(p, fx.Node) and p.op == "get_attr")
        return str(node.target).rpartition(".")[0]

    def add_module(self, path: str, module: nn.Module) -> str | None:
        """Put `module` at `path`; a layer already there (one module called twice) is reused. None when
        a different kind of layer holds the path: a weight tied between two ops (GPT-2's embedding and
        LM head) must not make the second op call the first one's layer; it stays a function call."""
        parent = _ensure_parents(self.root, path, self.classes)
        name = path.rpartition(".")[2]
        existing = getattr(parent, name, None)
        if existing is None:
            parent.add_module(name, module)
        elif type(existing) is not type(module):
            return None
        return path

    def arg(self, a: Any) -> Any:
        return fx.node.map_arg(a, lambda n: self.env[n])

    def module_for(self, node: fx.Node) -> tuple[str | None, list[Any]] | None:
        """(module path, inputs) for the aten calls that become layers; None for the others."""
        t, args = node.target, cast(list[Any], list(node.args))
        if t in (aten.conv1d.default, aten.conv2d.default, aten.conv3d.default):
            x, w, b = args[0], args[1], args[2] if len(args) > 2 else None
            weight = self.tensor(w)
            if weight is None:
                return None
            dims = weight.dim() - 2
            conv_cls: Any = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
            stride, padding, dilation, groups = (args[3:] + [1, 0, 1, 1][len(args[3:]) :])[:4]
            path = self.owner(w)
            conv = conv_cls(
                weight.shape[1] * groups,
                weight.shape[0],
                tuple(weight.shape[2:]),
                stride=stride,
                padding=padding,
                dilation=dilation,
                groups=groups,
                bias=b is not None,
            )
            conv.weight = cast(nn.Parameter, weight)
            if b is not None:
                conv.bias = cast(nn.Parameter, self.tensor(b))
            return self.add_module(path, conv), [x]
        if t is aten.linear.default:
            x, w, b = args[0], args[1], args[2] if len(args) > 2 else None
            weight = self.tensor(w)
            if weight is None:
                return None
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=b is not None)
            linear.weight = cast(nn.Parameter, weight)
            if b is not None:
                linear.bias = cast(nn.Parameter, self.tensor(b))
            return self.add_module(self.owner(w), linear), [x]
        if t is aten.addmm.default and len(args) == 3 and not node.kwargs:  # beta = alpha = 1
            b, x, w = args
            weight, bias = self.tensor(w), self.tensor(b)
            if not isinstance(weight, nn.Parameter) or not isinstance(bias, nn.Parameter) or weight.dim() != 2:
                return None
            return self.add_module(self.owner(w), Addmm(weight, bias)), [x]
        if t is aten.batch_norm.default:
            x, w, b, mean, var, _training, momentum, eps = args[:8]
            running_mean = self.tensor(mean)
            if running_mean is None:
                return None
            rank = len(node.meta["val"].shape) if "val" in node.meta else 4
            bn_cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[rank]
            bn = bn_cls(running_mean.numel(), eps=eps, momentum=momentum, affine=w is not None)
            if w is not None:
                bn.weight, bn.bias = cast(nn.Parameter, self.tensor(w)), cast(nn.Parameter, self.tensor(b))
            bn.running_mean, bn.running_var = running_mean, cast(torch.Tensor, self.tensor(var))
            tracked = self.by_name(self.owner(mean) + ".num_batches_tracked")
            if tracked is not None:
                bn.num_batches_tracked = tracked
            return self.add_module(self.owner(mean), bn), [x]
        if t is aten.layer_norm.default:
            x, shape, w, b = args[0], args[1], args[2] if len(args) > 2 else None, args[3] if len(args) > 3 else None
            ln = nn.LayerNorm(shape, eps=args[4] if len(args) > 4 else 1e-5, elementwise_affine=w is not None)
            if w is not None:
                ln.weight, ln.bias = cast(nn.Parameter, self.tensor(w)), cast(nn.Parameter, self.tensor(b))
                return self.add_module(self.owner(w), ln), [x]
            return None
        if t is aten.embedding.default:
            w, indices = args[0], args[1]
            weight = self.tensor(w)
            if weight is None:
                return None
            padding_idx = args[2] if len(args) > 2 and args[2] != -1 else None
            embedding = nn.Embedding(weight.shape[0], weight.shape[1], padding_idx=padding_idx)
            embedding.weight = cast(nn.Parameter, weight)
            return self.add_module(self.owner(w), embedding), [indices]
        if t in (aten.dropout.default, aten.dropout_.default):
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            path = stack[-1][0] if stack and "Dropout" in str(stack[-1][1]) else f"dropout_{node.name}"
            return self.add_module(path, nn.Dropout(args[1])), [args[0]]
        return None

    def lift(self) -> fx.GraphModule:
        # layers first, so their parameters belong to them and not to stand-in containers
        lifted: dict[fx.Node, tuple[str, list[Any]]] = {}
        for n in self.old.graph.nodes:
            if n.op == "call_function" and (m := self.module_for(n)) is not None and m[0] is not None:
                lifted[n] = (m[0], m[1])
        for node in self.old.graph.nodes:
            new: fx.Node
            if node.op == "placeholder":
                new = self.graph.placeholder(node.name)
            elif node.op == "get_attr":
                if all(u in lifted and node not in lifted[u][1] for u in node.users):
                    continue  # read only by a layer that now owns it
                self._attach_attr(str(node.target))
                new = self.graph.get_attr(str(node.target))
            elif node.op == "output":
                # rebuild the output structure export flattened, so a plain forward returns it
                leaves = list(self.arg(node.args[0]))
                info = getattr(self.old.graph._codegen, "pytree_info", None)
                self.graph.output(leaves)
                if info is not None and info.out_spec is not None:
                    self.graph._codegen = _UnflattenOutputs(info.out_spec)
                continue
            elif node in lifted:
                path, inputs = lifted[node]
                new = self.graph.call_module(path, tuple(self.arg(i) for i in inputs))
            elif node.op == "call_function" and node.target in _FUNCTIONS:
                new = self.graph.call_function(_FUNCTIONS[node.target], self.arg(node.args), self.arg(node.kwargs))
            else:
                if node.op == "call_module":  # e.g. the input guards torch.export adds
                    self.add_module(str(node.target), self.old.get_submodule(str(node.target)))
                new = self.graph.node_copy(node, lambda n: self.env[n])
            new.meta["nn_module_stack"] = {  # the root ('') is implicit in fx's own traces
                k: (q, _resolve_class(c)) for k, (q, c) in (node.meta.get("nn_module_stack") or {}).items() if q
            }
            self.env[node] = new
        root_cls = self.classes.get("")
        name = root_cls.__name__ if isinstance(root_cls, type) else str(root_cls or "LiftedModel").rpartition(".")[2]
        gm = fx.GraphModule(self.root, self.graph, name)  # named like the original model class
        for target, constant in self.constants.items():  # GraphModule made them persistent buffers
            prefix, _, attr = target.rpartition(".")
            gm.get_submodule(prefix).register_buffer(attr, constant, persistent=False)
        gm.graph.lint()
        return gm

    def _attach_attr(self, target: str) -> bool:
        """Keep parameters/buffers used directly by the graph (e.g. a positional embedding), and the
        constant tensors export lifts out of the code (`lifted_tensor_0`: Swin's attention mask
        pieces) as non-persistent buffers, so the state dict keeps the original keys."""
        tensor = self.by_name(target)
        if tensor is None:
            constant = _get_path(self.old, target)
            if not isinstance(constant, torch.Tensor):
                return False
            if isinstance(constant, nn.Parameter):  # a second name of a tied weight (lm_head.weight = wte.weight)
                parent = _ensure_parents(self.root, target, self.classes)
                if target.rpartition(".")[2] not in parent._parameters:
                    parent.register_parameter(target.rpartition(".")[2], constant)
                return True
            setattr(_ensure_parents(self.root, target, self.classes), target.rpartition(".")[2], constant)
            self.constants[target] = constant
            return True
        parent = _ensure_parents(self.root, target, self.classes)
        name = target.rpartition(".")[2]
        if isinstance(tensor, nn.Parameter):
            if name not in parent._parameters:
                parent.register_parameter(name, tensor)
        elif name not in parent._buffers:
            owner = _get_path(self.old, target.rpartition(".")[0]) if "." in target else self.old
            persistent = not (isinstance(owner, nn.Module) and name in owner._non_persistent_buffers_set)
            parent.register_buffer(name, tensor, persistent=persistent)
        return True


def lift_exported_program(program: torch.export.ExportedProgram) -> fx.GraphModule:
    """A trainable `GraphModule` equivalent to `program`, with Conv/Linear/BatchNorm/LayerNorm/Dropout
    modules (so `.train()`/`.eval()` work) and the original module names and scope names.

    It starts in eval mode. Inputs are the program's flattened positional/keyword tensors."""
    return _Lifter(program.module()).lift().eval()


def export_and_lift(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> fx.GraphModule:
    """`model` captured by `torch.export` and lifted: the graph for models that `torch.fx` cannot trace
    (Hugging Face transformers branch on tensor shapes and use `ModelOutput`s).

    The batch dimension of every tensor input stays dynamic (exported at batch 2: export specializes
    a size-1 dimension), so the result trains on any batch size. Captured in eval mode: code that
    branches on `self.training` (Hugging Face passes `dropout_p=0.1 if self.training else 0.0` to
    SDPA) is baked in as captured, so a train-mode capture would drop out at inference too; the price
    is that such dropout is not applied while fine-tuning. The lifted model returns what `model`
    returns (e.g. a `ModelOutput`)."""
    signature = inspect.signature(model.forward)
    bound = signature.bind(*args, **kwargs).arguments

    def batch_of_two(value: Any) -> Any:
        return torch.cat([value, value]) if isinstance(value, torch.Tensor) and value.dim() else value

    double_args = tuple(batch_of_two(a) for a in args)
    double_kwargs = {k: batch_of_two(v) for k, v in kwargs.items()}
    dynamic = {
        name: {0: torch.export.Dim.AUTO} if isinstance(value, torch.Tensor) and value.dim() else None
        for name, value in bound.items()
    }
    with evaluating(model):
        program = torch.export.export(model, double_args, double_kwargs, dynamic_shapes=dynamic, strict=False)
    return _Lifter(program.module()).lift().train(model.training)
