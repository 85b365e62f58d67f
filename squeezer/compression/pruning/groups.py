"""Channel groups: layers whose output channels must be pruned together.

torch-pruning's dependency graph finds them (residual adds, concatenations, BatchNorm, depthwise
convolutions); here they are filtered by the spec's rules (first conv, downsampling convs, grouped
convs, layers feeding a model output, scopes) and reduced to what masks and removal need.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import fx, nn

from squeezer.compression.build import BuildContext

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def out_axis(module: nn.Module) -> int:
    return 1 if isinstance(module, TRANSPOSED) else 0


def in_axis(module: nn.Module) -> int:
    return 0 if isinstance(module, TRANSPOSED) else 1


@dataclass
class ChannelGroup:
    """`n` output channels shared by `producers`; `norms` follow them; `consumers` read them as inputs."""

    id: int
    n: int
    producers: list[str]
    norms: list[str] = field(default_factory=list)
    consumers: list[tuple[str, list[int]]] = field(default_factory=list)  # (module, input channel per root)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "n": self.n,
            "producers": self.producers,
            "norms": self.norms,
            "consumers": [[name, idxs] for name, idxs in self.consumers],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChannelGroup:
        return cls(d["id"], d["n"], d["producers"], d["norms"], [(c[0], c[1]) for c in d["consumers"]])


def _fx_nodes(ctx: BuildContext) -> dict[str, fx.Node]:
    if ctx.traced is None:
        return {}
    return {str(n.target): n for n in ctx.traced.gm.graph.nodes if n.op == "call_module"}


def _reaches_output(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True if the node's output reaches a model output without passing another prunable layer."""
    stack, seen = list(node.users), set()
    while stack:
        user = stack.pop()
        if user in seen:
            continue
        seen.add(user)
        if user.op == "output":
            return True
        if user.op == "call_module" and isinstance(modules.get(str(user.target)), PRUNABLE):
            continue
        stack.extend(user.users)
    return False


def _first_layers(ctx: BuildContext, modules: dict[str, nn.Module]) -> set[str]:
    """Prunable layers reachable from a model input without another prunable layer in between."""
    if ctx.traced is None:
        return set()
    first: set[str] = set()
    stack = [n for n in ctx.traced.gm.graph.nodes if n.op == "placeholder"]
    seen: set[fx.Node] = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for user in node.users:
            if user.op == "call_module" and isinstance(modules.get(str(user.target)), PRUNABLE):
                first.add(str(user.target))
            else:
                stack.append(user)
    return first


def find_groups(ctx: BuildContext, allowed: set[str], prune_first: bool, prune_downsample: bool) -> list[ChannelGroup]:
    """Groups whose every producer is allowed (scope, first conv, stride, grouping, not an output layer)."""
    model = copy.deepcopy(ctx.original if ctx.original is not None else ctx.model).eval()
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    nodes = _fx_nodes(ctx)
    fx_modules = ctx.traced.modules if ctx.traced is not None else {}
    first = _first_layers(ctx, fx_modules)

    def eligible(name: str) -> bool:
        m = modules[name]
        if name not in allowed or not isinstance(m, PRUNABLE):
            return False
        if name in nodes and _reaches_output(nodes[name], fx_modules):
            return False
        if name in first and not prune_first:
            return False
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            if m.groups > 1 and m.groups != m.in_channels:
                return False
            if any(s != 1 for s in m.stride) and not prune_downsample:
                return False
        return True

    output_layers = [
        modules[n] for n in nodes if isinstance(modules.get(n), PRUNABLE) and _reaches_output(nodes[n], fx_modules)
    ]
    args, kwargs = ctx.example_inputs
    args = tuple(a.detach() for a in args)
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=args, forward_fn=lambda m, _: m(*args, **kwargs)
    )
    groups: list[ChannelGroup] = []
    for tp_group in graph.get_all_groups(ignored_layers=output_layers, root_module_types=list(PRUNABLE)):
        root = tp_group[0].dep.target.module
        n = len(tp_group[0].idxs)
        group = ChannelGroup(len(groups), n, [])
        ok = True
        for item in tp_group:
            dep, idxs = item.dep, list(item.idxs)
            module = dep.target.module
            if module not in names:
                continue  # torch-pruning's stand-ins for elementwise ops and reshapes: nothing to prune
            name = names[module]
            out_fn = dep.handler.__name__ == "prune_out_channels"
            if isinstance(module, PRUNABLE) and out_fn:
                # a depthwise conv in a group is pruned through its producer; its own filters follow
                ok &= eligible(name) or (
                    isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d)
                    and module.groups == module.in_channels
                    and module.groups > 1
                )
                ok &= len(idxs) == n
                group.producers.append(name)
            elif isinstance(module, NORMS):
                group.norms.append(name)
            elif isinstance(module, PRUNABLE):
                group.consumers.append((name, idxs))
            else:
                ok = False  # a layer kind whose channels we do not know how to remove
        if ok and group.producers and root in names:
            groups.append(group)
    return groups


def example_device(ctx: BuildContext) -> torch.device:
    return ctx.device()
