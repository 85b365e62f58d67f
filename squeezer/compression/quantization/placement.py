"""Where quantizers go, computed on the traced fx graph.

Rule: every activation tensor that feeds a quantizable op (conv, linear, matmul, tensor + tensor,
average pooling, mean) gets a quantizer at the output of the op that produced it, searching
upstream through scale-preserving ops (reshape, transpose, max-pool, dropout, concat). Such a
tensor gets one quantizer, shared by all its consumers; the inputs of a concat share one
quantizer (unified scale), and a concat that no quantizable op reads (DenseNet's concat -> BatchNorm)
has its inputs quantized each on its own. Activations (ReLU, ...) and BatchNorm are not quantizable, so
conv -> bn -> relu gets a single quantizer on the ReLU output: the fused pattern NNCF and
onnxruntime expect. The result is the QDQ layout onnxruntime turns into QLinearConv/QLinearAdd.
Where a runtime needs more or fewer quantizers than that, `opts.policy` (placement_policy.py) says so.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import fx, nn

from squeezer.compression.config.models import QuantizationConfig, QuantizerGroup
from squeezer.compression.graph.modules import WEIGHTED_LAYERS, is_weighted_for
from squeezer.compression.graph.scopes import matches_any
from squeezer.compression.graph.trace import TracedGraph, first_layers, tensor_meta
from squeezer.compression.quantization.ignored_patterns import ignored_nodes
from squeezer.compression.quantization.op_kinds import (
    activation_ports,
    is_agnostic,
    is_concat,
    is_layout_change,
    is_passthrough,
    is_tensor,
    port_args,
    reads_activations,
)
from squeezer.compression.quantization.placement_policy import PlacementOptions
from squeezer.compression.quantization.quantizer import QuantizerSpec, with_bits
from squeezer.compression.quantization.quantizer_specs import activation_spec, considered, weight_spec
from squeezer.compression.quantization.upstream import branching_edges, chain_between, upstream_producers
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


# ------------------------------------------------------------------------------------------ weights


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
        if not considered([name], cfg.weights, cfg, opts):
            continue
        for tensor in tensors:
            spec = weight_spec(module, cfg, opts, [name], name in first_convs, tensor)
            point_id = f"{name}|WEIGHT" if tensor == "weight" else f"{name}.{tensor}|WEIGHT"
            setup.weights.append(WeightPoint(point_id, name, spec, tensor))
    return setup


# ------------------------------------------------------------------------------------------ setup


def compute_setup(traced: TracedGraph, cfg: QuantizationConfig, opts: PlacementOptions) -> QuantizerSetup:
    """The quantizers of a traced model: one per weight matrix, one per group of producers whose outputs
    the quantizable ops read (the module docstring has the rule, `opts.policy` the runtime's rules)."""
    placing = _Placing(traced, cfg, opts)
    weights = _weight_points(placing)
    shared = _SharedQuantizers(placing)
    concat_branches = _quantize_op_inputs(placing, shared)
    if cfg.quantize_outputs:
        _quantize_model_outputs(placing, shared)
    _share_concat_scale(shared, concat_branches)
    return QuantizerSetup(weights, _activation_points(placing, shared))


@dataclass(frozen=True)
class _Placing:
    """What every step of `compute_setup` reads: the traced model, the quantization section, the options."""

    traced: TracedGraph
    cfg: QuantizationConfig
    opts: PlacementOptions

    @functools.cached_property
    def modules(self) -> dict[str, nn.Module]:
        """Built once: placement asks for it per node (726 times on EfficientNet-B0, 0.37 s rebuilt each
        time), and the model's modules do not change while the setup is computed."""
        return self.traced.modules

    def aliases(self, node: fx.Node) -> list[str]:
        """The node's scope names, Squeezer's and NNCF's: a scope pattern may use either."""
        return [self.traced.names[node], self.traced.nncf_names[node]]

    @functools.cached_property
    def in_ignored_patterns(self) -> set[fx.Node]:
        return ignored_nodes(self.traced.gm, self.modules, list(self.cfg.ignored_patterns))

    def considered(self, node: fx.Node, group: QuantizerGroup) -> bool:
        if node in self.in_ignored_patterns:
            return False
        return considered(self.aliases(node), group, self.cfg, self.opts)


def _weight_points(placing: _Placing) -> list[WeightPoint]:
    """A quantizer per weight matrix of each layer the graph calls (a layer called twice gets one)."""
    cfg = placing.cfg
    first_convs = (
        first_layers(placing.traced.gm, (nn.Conv2d, nn.Conv3d)) if cfg.overflow_fix == "first_layer_only" else set()
    )
    points: list[WeightPoint] = []
    seen: set[tuple[str, str]] = set()
    for node in placing.traced.gm.graph.nodes:
        if node.op != "call_module":
            continue
        for path, module, tensor, point_id in _weighted_layers(node, placing.modules, placing.traced.names[node]):
            if (path, tensor) in seen:
                continue
            seen.add((path, tensor))
            if placing.considered(node, cfg.weights):
                spec = weight_spec(module, cfg, placing.opts, placing.aliases(node), path in first_convs, tensor)
                points.append(WeightPoint(point_id, path, spec, tensor))
    return points


# ------------------------------------------------------------------------------------------ activations


class _SharedQuantizers:
    """The producers whose outputs are quantized, joined into groups that share one quantizer (union-find),
    and where each one's quantizer is applied: after it for some of its users (`edges`), and again right
    before a consumer at the end of a scale-preserving chain from it that is more than reshapes and
    transposes (a max-pool, a flatten, indexing: `chain_ends`)."""

    def __init__(self, placing: _Placing) -> None:
        self.placing = placing
        self.parent: dict[fx.Node, fx.Node] = {}  # producer -> group root
        self.edges: dict[fx.Node, set[tuple[fx.Node, fx.Node]]] = {}
        self.chain_ends: dict[fx.Node, set[tuple[fx.Node, fx.Node]]] = {}
        self.consumers: dict[fx.Node, list[fx.Node]] = {}

    def find(self, node: fx.Node) -> fx.Node:
        while self.parent.setdefault(node, node) is not node:
            node = self.parent[node]
        return node

    def join(self, nodes: list[fx.Node], root: fx.Node) -> None:
        for node in nodes:
            self.parent[self.find(node)] = self.find(root)

    def add_input(self, arg: Any, consumer: fx.Node) -> list[fx.Node]:
        """Quantize `arg` where `consumer` reads it: at the producers upstream of it, which then share one
        quantizer; returns them (empty: a constant, or an input left unquantized)."""
        if not isinstance(arg, fx.Node):
            return []
        modules, policy = self.placing.modules, self.placing.opts.policy
        path_edges: list[tuple[fx.Node, fx.Node]] = []
        producers = upstream_producers(arg, modules, path_edges, consumer, policy.quantizes_concats_and_splits)
        if not producers:
            return []
        if not self.placing.cfg.quantize_inputs and any(p.op == "placeholder" for p in producers):
            return []
        self.join(producers[1:], producers[0])
        for p in producers:
            self.find(p)
            self.edges.setdefault(p, set()).update(e for e in path_edges if e[0] is p)
            self.consumers.setdefault(p, []).append(consumer)
        chain = chain_between(arg, producers, modules)
        passed = [n for n in chain if is_tensor(n)]  # the tensors the input passes, shape reads aside
        if arg not in producers and not all(is_passthrough(n, modules) or is_layout_change(n) for n in passed):
            self.chain_ends.setdefault(producers[0], set()).add((arg, consumer))
        if policy.requantizes_branching_chains:
            self.chain_ends.setdefault(producers[0], set()).update(branching_edges(chain, producers, modules))
        return producers

    def groups(self, order: dict[fx.Node, int]) -> list[list[fx.Node]]:
        """The groups, each in graph order, ordered by their first member."""
        groups: dict[fx.Node, list[fx.Node]] = {}
        for p in self.parent:
            groups.setdefault(self.find(p), []).append(p)
        ordered = sorted(groups.values(), key=lambda members: min(order[m] for m in members))
        for members in ordered:
            members.sort(key=order.__getitem__)
        return ordered


def _input_ports(placing: _Placing, node: fx.Node) -> list[int]:
    """The input ports of `node` to quantize: NNCF's rule, else the runtime's additions."""
    return activation_ports(node, placing.modules) or placing.opts.policy.extra_ports(node, placing.modules)


def _quantize_op_inputs(placing: _Placing, shared: _SharedQuantizers) -> dict[fx.Node, list[fx.Node]]:
    """Quantize what each quantizable op reads (the sums the runtime runs in FP32 left out) and each
    concat's inputs; returns each concat's branch producers."""
    modules, cfg, policy = placing.modules, placing.cfg, placing.opts.policy

    def quantizes_input(node: fx.Node) -> bool:
        ports = _input_ports(placing, node)
        return bool(ports) and reads_activations(node, ports)

    fp32_adds = policy.fp32_adds(placing.traced.gm, modules, quantizes_input, lambda n: is_agnostic(n, modules))
    unified_ops = [op for group in (cfg.activations.unified_scale_ops or []) for op in group]
    concat_branches: dict[fx.Node, list[fx.Node]] = {}
    for node in placing.traced.gm.graph.nodes:
        if node in fp32_adds:
            continue
        if is_concat(node):  # even where no quantizable op reads it (DenseNet's concat -> BatchNorm -> ReLU)
            branches = node.args[0] if isinstance(node.args[0], (list, tuple)) else []
            for branch in branches:  # each branch's output quantized: the runtime concatenates INT8 tensors
                if isinstance(branch, fx.Node) and is_tensor(branch) and placing.considered(node, cfg.activations):
                    concat_branches.setdefault(node, []).extend(shared.add_input(branch, node))
        ports = _input_ports(placing, node)
        if not ports or not placing.considered(node, cfg.activations):
            continue
        if not reads_activations(node, ports):
            continue  # x + 1, x @ W (a parameter): not an activation-activation op
        tensor_args = port_args(node, ports, modules)
        for arg in tensor_args:
            shared.add_input(arg, node)
        if matches_any(placing.aliases(node), unified_ops):
            found = [
                p
                for a in tensor_args
                if isinstance(a, fx.Node)
                for p in (upstream_producers(a, modules, [], node) or [])
            ]
            if found:
                shared.join(found[1:], found[0])
    return concat_branches


def _quantize_model_outputs(placing: _Placing, shared: _SharedQuantizers) -> None:
    """`quantize_outputs`: what the model returns is quantized as an op's input would be."""
    for node in placing.traced.gm.graph.nodes:
        if node.op == "output":
            for arg in node.all_input_nodes:
                shared.add_input(arg, node)


def _share_concat_scale(shared: _SharedQuantizers, concat_branches: dict[fx.Node, list[fx.Node]]) -> None:
    """A quantized concat output shares its branches' scale (as NNCF unifies a concat's inputs), so
    QLinearConcat copies bytes instead of requantizing every input (SqueezeNet 1.53x -> 2.19x of FP32)."""
    for concat, branch_producers in concat_branches.items():
        if concat in shared.parent:
            shared.join(branch_producers, concat)


def _activation_points(placing: _Placing, shared: _SharedQuantizers) -> list[ActivationPoint]:
    """One ActivationPoint per group, in graph order; its spec follows the scope overrides of its consumers."""
    names = placing.traced.names
    order = {n: i for i, n in enumerate(placing.traced.gm.graph.nodes)}

    def named(edges: dict[fx.Node, set[tuple[fx.Node, fx.Node]]], members: list[fx.Node]) -> list[list[str]]:
        return [list(e) for e in sorted({(names[a], names[b]) for m in members for a, b in edges.get(m, ())})]

    points: list[ActivationPoint] = []
    for members in shared.groups(order):
        consumers = sorted({c for m in members for c in shared.consumers.get(m, [])}, key=order.__getitem__)
        consumer_aliases = [a for c in consumers for a in placing.aliases(c)]
        points.append(
            ActivationPoint(
                id=";".join(f"{names[m]}|OUTPUT" for m in members),
                producers=[names[m] for m in members],
                edges=named(shared.edges, members),
                chain_ends=named(shared.chain_ends, members),
                consumers=[names[c] for c in consumers],
                spec=activation_spec(placing.cfg, consumer_aliases, tensor_meta(members[0])),
            )
        )
    return points


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
