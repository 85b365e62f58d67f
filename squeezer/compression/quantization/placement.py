"""Where quantizers go, computed on the traced fx graph.

Rule: every activation tensor that feeds a quantizable op (conv, linear, matmul, tensor + tensor,
average pooling, mean) gets a quantizer at the output of the op that produced it, searching
upstream through scale-preserving ops (reshape, transpose, max-pool, dropout, concat). Such a
tensor gets one quantizer, shared by all its consumers; the inputs of a concat share one
quantizer (unified scale). Activations (ReLU, ...) and BatchNorm are not quantizable, so
conv -> bn -> relu gets a single quantizer on the ReLU output: the fused pattern NNCF and
onnxruntime expect. The result is the QDQ layout onnxruntime turns into QLinearConv/QLinearAdd.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

from squeezer.compression.config.models import QuantizationConfig, QuantizerGroup, QuantizerOverride
from squeezer.compression.graph.modules import WEIGHTED_LAYERS, is_user_registered, is_weighted_for, registration
from squeezer.compression.graph.scopes import matches_any, should_consider
from squeezer.compression.graph.trace import TracedGraph, first_layers, tensor_meta
from squeezer.compression.quantization.onnxruntime_rules import reads_shape
from squeezer.compression.quantization.placement_policy import PlacementOptions
from squeezer.compression.quantization.quantizer import QuantizerSpec, with_bits
from squeezer.errors import ConfigError

__all__ = [  # PlacementOptions too: callers import it from here
    "ACTIVATIONS_ATTR",
    "WEIGHTED_MODULES",
    "ActivationPoint",
    "PlacementOptions",
    "QuantizerSetup",
    "WeightPoint",
    "apply_manual_precision",
    "attention_projections",
    "compute_setup",
    "untraced_setup",
]

WEIGHTED_MODULES = WEIGHTED_LAYERS
ACTIVATIONS_ATTR = "activation_quantizers"  # the ModuleDict of activation quantizers in a compressed model
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


@dataclass
class WeightPoint:
    id: str
    module: str
    spec: QuantizerSpec
    tensor: str = "weight"  # the parameter of `module` it quantizes (nn.MultiheadAttention: in_proj_weight)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "module": self.module, "tensor": self.tensor, "spec": self.spec.to_dict()}


@dataclass
class ActivationPoint:
    """One activation quantizer: inserted after each producer (for the listed users) and before
    consumers reached through scale-preserving ops."""

    id: str
    producers: list[str]
    edges: list[list[str]]  # [producer name, user name]: the user reads the quantized tensor
    chain_ends: list[list[str]]  # [argument name, consumer name]: quantize again right before consumer
    consumers: list[str]
    spec: QuantizerSpec

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        return d


@dataclass
class QuantizerSetup:
    weights: list[WeightPoint] = field(default_factory=list)
    activations: list[ActivationPoint] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"weights": [w.to_dict() for w in self.weights], "activations": [a.to_dict() for a in self.activations]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantizerSetup:
        return cls(
            weights=[
                WeightPoint(w["id"], w["module"], QuantizerSpec.from_dict(w["spec"]), w.get("tensor", "weight"))
                for w in d["weights"]
            ],
            activations=[
                ActivationPoint(**{**a, "spec": QuantizerSpec.from_dict(a["spec"])}) for a in d["activations"]
            ],
        )


# ------------------------------------------------------------------------------------------ op kinds


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
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _AGNOSTIC_MODULES)
    if node.op == "call_function":
        return node.target in _AGNOSTIC_FUNCS
    if node.op == "call_method":
        return node.target in _AGNOSTIC_METHODS
    return False


_PASSTHROUGH_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _is_passthrough(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Ops that return their input unchanged at inference: no second quantize call is needed after them."""
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _PASSTHROUGH_MODULES)
    return (node.op == "call_function" and node.target is F.dropout) or (
        node.op == "call_method" and node.target == "contiguous"
    )


def _is_tensor(node: fx.Node) -> bool:
    return tensor_meta(node) is not None


def _reads_activations(node: fx.Node, ports: list[int]) -> bool:
    """False for a two-input op with a constant side (x + 1, x @ W with W a parameter): placement
    quantizes only activation-activation ones."""
    if len(ports) != 2:
        return True
    args = [node.args[i] for i in ports if i < len(node.args)]
    return all(isinstance(a, fx.Node) and _is_tensor(a) and a.op != "get_attr" for a in args)


def _is_part_of_split(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """`chunk(x)[i]`, `split(x)[i]`: a tensor taken from an op (not scale-preserving as placed, such as
    `unbind`) that returns a tuple of tensors."""
    source = node.args[0] if node.target is operator.getitem and node.args else None
    return (
        isinstance(source, fx.Node)
        and source.op in ("call_function", "call_method")
        and _is_tensor(node)
        and not _is_tensor(source)
        and not is_agnostic(source, modules)
    )


def _is_concat(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in (torch.cat, torch.concat)


def _is_behind_concat(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """`node` is a concat's output through reshapes / transposes (ShuffleNet's channel shuffle): the halves
    of a split of it take the concat's quantizer (as quantize_static's file does), so the next block's
    split and convs read int8 without a requantization."""
    while not _is_concat(node):
        source = node.args[0] if node.args else None
        if not is_agnostic(node, modules) or node.target is operator.getitem or not isinstance(source, fx.Node):
            return False
        node = source
    return True


def _branching_edges(
    arg: fx.Node, producers: list[fx.Node], modules: dict[str, nn.Module]
) -> set[tuple[fx.Node, fx.Node]]:
    """Edges (tensor, op) inside a scale-preserving chain from `producers` to `arg` where the tensor has
    other readers too: GoogLeNet's max-pool feeds three convs and the next branch's max-pool.
    onnxruntime runs DequantizeLinear -> MaxPool -> QuantizeLinear on int8 only when the QuantizeLinear
    is the pool's sole reader, so the quantizer is applied again before the second pool as well (the
    same quantizer: a max-pool of grid values stays on the grid, so the numbers do not change)."""
    edges: set[tuple[fx.Node, fx.Node]] = set()
    stack, seen = [arg], set(producers)
    while stack:
        node = stack.pop()
        if node in seen or not is_agnostic(node, modules):
            continue
        seen.add(node)
        for source in node.all_input_nodes:
            branches = _is_tensor(source) and len(source.users) > 1 and not _is_passthrough(source, modules)
            if branches and source not in producers and is_agnostic(source, modules):
                edges.add((source, node))
            stack.append(source)
    return edges


def _upstream(
    node: fx.Node,
    modules: dict[str, nn.Module],
    edges: list[tuple[fx.Node, fx.Node]],
    user: fx.Node,
    split_parts: bool = False,
) -> list[fx.Node] | None:
    """Producers feeding `node` through scale-preserving ops; None if a constant is among them.

    `split_parts` (onnxruntime): a part of a `chunk` / `split` (which returns a tuple, not a tensor)
    is a producer of its own, so the convs reading ShuffleNet's split halves get a quantized input; so
    is a concat, whose output is quantized besides its branches (sharing their quantizer, see
    `compute_setup`): onnxruntime runs it as QLinearConcat and a max-pool after it on int8 (GoogLeNet
    1.79x -> 2.10x of FP32). It fuses DequantizeLinear -> Concat -> QuantizeLinear only when the
    QuantizeLinear is the concat's sole reader, so the concat's shape reads (ShuffleNet's channel
    shuffle asks `x.size()`) take the quantized tensor too, whose shape is the same."""
    if node.op == "get_attr":
        return None
    if split_parts and _is_concat(node):
        edges.extend([(node, user), *((node, reader) for reader in node.users if reads_shape(reader))])
        return [node]
    if split_parts and _is_part_of_split(node, modules):
        split = cast(fx.Node, node.args[0])  # chunk / split, checked by _is_part_of_split
        source = split.args[0] if split.args else None
        if isinstance(source, fx.Node) and _is_behind_concat(source, modules):
            return _upstream(source, modules, edges, split, split_parts)
        edges.append((node, user))
        return [node]
    if not is_agnostic(node, modules):
        if not _is_tensor(node):
            return None
        edges.append((node, user))
        return [node]
    if node.target in (torch.cat, torch.concat):
        inputs = node.args[0] if isinstance(node.args[0], (list, tuple)) else [node.args[0]]
    else:
        inputs = [node.args[0]]
    found: list[fx.Node] = []
    for inp in inputs:
        if not isinstance(inp, fx.Node):
            return None
        sub = _upstream(inp, modules, edges, node, split_parts)
        if sub is None:
            return None
        found.extend(sub)
    return found


# ------------------------------------------------------------------------------------------ specs


def _override(group: QuantizerGroup, overrides: dict[str, QuantizerOverride], aliases: list[str]) -> dict[str, Any]:
    values = {k: getattr(group, k) for k in ("mode", "bits", "signed", "per_channel")}
    for pattern, ov in overrides.items():
        if matches_any(aliases, [pattern]):
            values.update({k: v for k, v in ov.model_dump(exclude={"initializer"}).items() if v is not None})
    return values


def _weight_scale_shape(module: nn.Module, per_channel: bool, tensor: str = "weight") -> tuple[int, ...]:
    weight = cast(torch.Tensor, getattr(module, tensor))
    if not per_channel:
        return (1,)
    reg = registration(module)
    dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
    if reg:
        dim = reg["weight_dim"]
    shape = [1] * weight.dim()
    shape[dim] = int(weight.shape[dim])
    return tuple(shape)


def attention_projections(module: nn.MultiheadAttention) -> list[str]:
    """The in-projection matrices of an nn.MultiheadAttention, in the order its forward applies them:
    the packed (3E, E) `in_proj_weight`, or q/k/v_proj_weight when key and value have other widths."""
    if module._qkv_same_embed_dim:
        return ["in_proj_weight"]
    return ["q_proj_weight", "k_proj_weight", "v_proj_weight"]


def _weighted_layers(node: fx.Node, modules: dict[str, nn.Module], name: str) -> list[tuple[str, nn.Module, str, str]]:
    """(module path, layer, tensor, weight quantizer id) of the weight matrices a module call uses.

    nn.MultiheadAttention is one leaf op: its in-projection matrices belong to it (ids `<node>/linear_<k>`,
    NNCF's names for the `linear` calls of its forward) and its `out_proj` Linear never appears as a call
    of its own.
    """
    target = str(node.target)
    module = modules[target]
    if isinstance(module, nn.MultiheadAttention):
        projections = [
            (target, module, t, f"{name}/linear_{k}|WEIGHT") for k, t in enumerate(attention_projections(module))
        ]
        return [
            *projections,
            (f"{target}.out_proj", module.out_proj, "weight", f"{name}/Linear[out_proj]/linear_0|WEIGHT"),
        ]
    if not is_weighted_for(module, "quantization"):
        return []
    return [(target, module, "weight", f"{name}|WEIGHT")]


def weight_spec(
    module: nn.Module,
    cfg: QuantizationConfig,
    opts: PlacementOptions,
    aliases: list[str],
    first_conv: bool,
    tensor: str = "weight",
) -> QuantizerSpec:
    """The weight quantizer of one layer: config, scope overrides and the target device's rules."""
    hw = opts.target_device != "TRIAL"
    v = _override(cfg.weights, cfg.scope_overrides.weights, aliases)
    bits = v["bits"] or 8
    per_channel = v["per_channel"] if v["per_channel"] is not None else hw
    signed = v["signed"] if v["signed"] is not None else (True if hw else None)
    half = (
        bits == 8
        and opts.target_device in ("ANY", "CPU", "CPU_SPR")
        and (cfg.overflow_fix == "enable" or (cfg.overflow_fix == "first_layer_only" and first_conv))
    )
    return QuantizerSpec(
        num_bits=bits,
        mode=v["mode"] or "symmetric",
        signedness_to_force=signed,
        narrow_range=bits == 8 and not half,
        half_range=half,
        per_channel=per_channel,
        scale_shape=_weight_scale_shape(module, per_channel, tensor),
        logarithm_scale=cfg.weights.logarithm_scale,
        is_weights=True,
        compression_lr_multiplier=cfg.compression_lr_multiplier,
    )


def _considered(aliases: list[str], group: QuantizerGroup, cfg: QuantizationConfig, opts: PlacementOptions) -> bool:
    """The scopes of one quantizer group: global, section and group ignored scopes; the narrowest target scopes."""
    ignored = (opts.global_ignored or []) + (cfg.ignored_scopes or []) + (group.ignored_scopes or [])
    section_target = opts.global_target if opts.global_target is not None else cfg.target_scopes
    target = group.target_scopes if group.target_scopes is not None else section_target
    return should_consider(aliases, ignored, target)


def untraced_setup(model: nn.Module, cfg: QuantizationConfig, opts: PlacementOptions) -> QuantizerSetup:
    """A model neither torch.fx nor torch.export can capture: weight quantizers only, on the layers and with
    the specs `compute_setup` gives (same predicate, same scopes, same `weight_spec`).

    Without a graph two things stand in for it: a layer's module name is its only scope name, and the
    first layers of `overflow_fix: first_layer_only` are the first Conv2d/Conv3d defined.
    """
    setup = QuantizerSetup()
    first_convs: set[str] = set()
    if cfg.overflow_fix == "first_layer_only":
        first = next((n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
        first_convs = {first} if first is not None else set()
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):  # its out_proj Linear comes as a module of its own
            tensors = attention_projections(module)
        elif is_weighted_for(module, "quantization"):
            tensors = ["weight"]
        else:
            continue
        if not _considered([name], cfg.weights, cfg, opts):
            continue
        for tensor in tensors:
            spec = weight_spec(module, cfg, opts, [name], name in first_convs, tensor)
            point_id = f"{name}|WEIGHT" if tensor == "weight" else f"{name}.{tensor}|WEIGHT"
            setup.weights.append(WeightPoint(point_id, name, spec, tensor))
    return setup


def compute_setup(traced: TracedGraph, cfg: QuantizationConfig, opts: PlacementOptions) -> QuantizerSetup:
    modules = traced.modules
    setup = QuantizerSetup()
    first_convs = first_layers(traced.gm, (nn.Conv2d, nn.Conv3d)) if cfg.overflow_fix == "first_layer_only" else set()

    def aliases(node: fx.Node) -> list[str]:
        return [traced.names[node], traced.nncf_names[node]]

    def considered(node: fx.Node, group: QuantizerGroup) -> bool:
        return _considered(aliases(node), group, cfg, opts)

    policy = opts.policy

    # ------------------------------------------------------------------ weights
    seen: set[tuple[str, str]] = set()
    for node in traced.gm.graph.nodes:
        if node.op != "call_module":
            continue
        for path, module, tensor, point_id in _weighted_layers(node, modules, traced.names[node]):
            if (path, tensor) in seen:
                continue
            seen.add((path, tensor))
            if considered(node, cfg.weights):
                spec = weight_spec(module, cfg, opts, aliases(node), path in first_convs, tensor)
                setup.weights.append(WeightPoint(point_id, path, spec, tensor))

    # ------------------------------------------------------------------ activations
    # producer -> group root (union-find over producers that must share one quantizer)
    parent: dict[fx.Node, fx.Node] = {}

    def find(n: fx.Node) -> fx.Node:
        while parent.setdefault(n, n) is not n:
            n = parent[n]
        return n

    edges: dict[fx.Node, set[tuple[fx.Node, fx.Node]]] = {}
    chain_ends: dict[fx.Node, set[tuple[fx.Node, fx.Node]]] = {}
    consumers: dict[fx.Node, list[fx.Node]] = {}
    unified_ops = [op for group in (cfg.activations.unified_scale_ops or []) for op in group]

    def add_input(arg: Any, consumer: fx.Node) -> list[fx.Node]:
        if not isinstance(arg, fx.Node):
            return []
        path_edges: list[tuple[fx.Node, fx.Node]] = []
        producers = _upstream(arg, modules, path_edges, consumer, split_parts=policy.quantizes_concats_and_splits)
        if not producers:
            return []
        if not cfg.quantize_inputs and any(p.op == "placeholder" for p in producers):
            return []
        for p in producers[1:]:
            parent[find(p)] = find(producers[0])
        for p in producers:
            find(p)
            edges.setdefault(p, set()).update(e for e in path_edges if e[0] is p)
            consumers.setdefault(p, []).append(consumer)
        chain = {user for _, user in path_edges} | {arg}
        chain.discard(consumer)
        if arg not in producers and not all(_is_passthrough(n, modules) for n in chain):
            chain_ends.setdefault(producers[0], set()).add((arg, consumer))
        if policy.requantizes_branching_chains:
            chain_ends.setdefault(producers[0], set()).update(_branching_edges(arg, producers, modules))
        return producers

    def quantizes_input(node: fx.Node) -> bool:
        ports = activation_ports(node, modules) or policy.extra_ports(node, modules)
        return bool(ports) and _reads_activations(node, ports)

    concat_branches: dict[fx.Node, list[fx.Node]] = {}
    skipped_adds = policy.fp32_adds(traced.gm, modules, quantizes_input, lambda n: is_agnostic(n, modules))
    for node in traced.gm.graph.nodes:
        if node in skipped_adds:
            continue
        ports = activation_ports(node, modules) or policy.extra_ports(node, modules)
        if (
            policy.quantizes_concats_and_splits
            and node.op == "call_function"
            and node.target in (torch.cat, torch.concat)
        ):
            branches = node.args[0] if isinstance(node.args[0], (list, tuple)) else []
            for branch in branches:  # each branch's output quantized: the convs that end them run in INT8
                if isinstance(branch, fx.Node) and _is_tensor(branch) and considered(node, cfg.activations):
                    concat_branches.setdefault(node, []).extend(add_input(branch, node))
        if not ports or not considered(node, cfg.activations):
            continue
        if not _reads_activations(node, ports):
            continue  # x + 1, x @ W (a parameter): not an activation-activation op
        tensor_args = port_args(node, ports, modules)
        for arg in tensor_args:
            add_input(arg, node)
        if matches_any(aliases(node), unified_ops):
            found = [p for a in tensor_args if isinstance(a, fx.Node) for p in (_upstream(a, modules, [], node) or [])]
            for p in found[1:]:
                parent[find(p)] = find(found[0])
    if cfg.quantize_outputs:
        for node in traced.gm.graph.nodes:
            if node.op == "output":
                for arg in node.all_input_nodes:
                    add_input(arg, node)
    # A quantized concat output shares its branches' scale (as NNCF unifies a concat's inputs), so
    # QLinearConcat copies bytes instead of requantizing every input (SqueezeNet 1.53x -> 2.19x of FP32).
    for concat, branch_producers in concat_branches.items():
        if concat in parent:
            for p in branch_producers:
                parent[find(p)] = find(concat)

    groups: dict[fx.Node, list[fx.Node]] = {}
    for p in parent:
        groups.setdefault(find(p), []).append(p)
    order = {n: i for i, n in enumerate(traced.gm.graph.nodes)}
    for members in sorted(groups.values(), key=lambda ms: min(order[m] for m in ms)):
        members.sort(key=order.__getitem__)
        group_consumers = sorted({c for m in members for c in consumers.get(m, [])}, key=order.__getitem__)
        consumer_aliases = [a for c in group_consumers for a in aliases(c)]
        v = _override(cfg.activations, cfg.scope_overrides.activations, consumer_aliases)
        mode = v["mode"] or ("asymmetric" if cfg.preset == "mixed" else "symmetric")
        per_channel = bool(v["per_channel"])
        shape = tensor_meta(members[0])
        scale_shape: tuple[int, ...] = (1,)
        if per_channel and shape is not None and len(shape) >= 2:
            scale_shape = tuple(shape[1] if i == 1 else 1 for i in range(len(shape)))
        spec = QuantizerSpec(
            num_bits=v["bits"] or 8,
            mode=mode,
            signedness_to_force=v["signed"],
            per_channel=per_channel,
            scale_shape=scale_shape,
            logarithm_scale=cfg.activations.logarithm_scale,
            compression_lr_multiplier=cfg.compression_lr_multiplier,
        )
        ids = [f"{traced.names[m]}|OUTPUT" for m in members]
        setup.activations.append(
            ActivationPoint(
                id=";".join(ids),
                producers=[traced.names[m] for m in members],
                edges=[
                    list(e)
                    for e in sorted({(traced.names[a], traced.names[b]) for m in members for a, b in edges.get(m, ())})
                ],
                chain_ends=[
                    list(e)
                    for e in sorted(
                        {(traced.names[a], traced.names[b]) for m in members for a, b in chain_ends.get(m, ())}
                    )
                ],
                consumers=[traced.names[c] for c in group_consumers],
                spec=spec,
            )
        )
    return setup


def apply_manual_precision(setup: QuantizerSetup, pairs: list[list[int | str]]) -> None:
    """`bitwidth_per_scope`: the first quantizer whose id contains the string gets the bits."""
    points: list[WeightPoint | ActivationPoint] = [*setup.weights, *setup.activations]
    for i, (bits, scope) in enumerate(pairs):
        point = next((p for p in points if str(scope) in p.id), None)
        if point is None:
            raise ConfigError(
                f"no quantizer id contains {scope!r}; ids look like: {[p.id for p in points[:5]]}",
                path=f"$.compression.initializer.precision.bitwidth_per_scope[{i}]",
            )
        point.spec = with_bits(point.spec, int(bits))
