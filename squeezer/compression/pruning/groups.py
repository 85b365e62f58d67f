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
from squeezer.compression.graph.trace import first_layers

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def out_axis(module: nn.Module) -> int:
    return 1 if isinstance(module, TRANSPOSED) else 0


def in_axis(module: nn.Module) -> int:
    return 0 if isinstance(module, TRANSPOSED) else 1


@dataclass
class Member:
    """A layer touched by a group: its channel `idxs[i]` is the group's channel `roots[i]`."""

    name: str
    idxs: list[int]
    roots: list[int]

    def keep_mask(self, group_mask: torch.Tensor, size: int) -> torch.Tensor:
        """1 for channels of this layer that stay, given the group's 0/1 mask."""
        mask = torch.ones(size)
        mask[self.idxs] = group_mask[self.roots].to(mask.dtype)
        return mask


@dataclass
class ChannelGroup:
    """`n` coupled channels: `producers` output them (a concat splits them among producers),
    `norms` follow them, `consumers` read them as input channels."""

    id: int
    n: int
    producers: list[Member] = field(default_factory=list)
    norms: list[Member] = field(default_factory=list)
    consumers: list[Member] = field(default_factory=list)

    @property
    def producer_names(self) -> list[str]:
        return [m.name for m in self.producers]

    def to_dict(self) -> dict[str, Any]:
        members = {
            k: [[m.name, m.idxs, m.roots] for m in getattr(self, k)] for k in ("producers", "norms", "consumers")
        }
        return {"id": self.id, "n": self.n, **members}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChannelGroup:
        members = {k: [Member(*m) for m in d[k]] for k in ("producers", "norms", "consumers")}
        return cls(d["id"], d["n"], **members)


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


def find_groups(ctx: BuildContext, allowed: set[str], prune_first: bool, prune_downsample: bool) -> list[ChannelGroup]:
    """Groups whose every producer is allowed (scope, first conv, stride, grouping, not an output layer)."""
    model = copy.deepcopy(ctx.original if ctx.original is not None else ctx.model).eval()
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    nodes = _fx_nodes(ctx)
    fx_modules = ctx.traced.modules if ctx.traced is not None else {}
    first = first_layers(ctx.traced.gm, PRUNABLE) if ctx.traced is not None else set()

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
        group = ChannelGroup(len(groups), len(tp_group[0].idxs))
        ok = True
        for item in tp_group:
            module = item.dep.target.module
            if module not in names:
                continue  # torch-pruning's stand-ins for elementwise ops and reshapes: nothing to prune
            member = Member(names[module], [int(i) for i in item.idxs], [int(r) for r in item.root_idxs])
            if isinstance(module, PRUNABLE) and item.dep.handler.__name__ == "prune_out_channels":
                # a depthwise conv is pruned through its producers; its own filters follow
                depthwise = (
                    isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and module.groups == module.in_channels > 1
                )
                ok &= eligible(member.name) or depthwise
                group.producers.append(member)
            elif isinstance(module, NORMS):
                group.norms.append(member)
            elif isinstance(module, PRUNABLE):
                group.consumers.append(member)
            else:
                ok = False  # a layer kind whose channels we do not know how to remove
        if ok and group.producers:
            groups.append(group)
    return groups


def example_device(ctx: BuildContext) -> torch.device:
    return ctx.device()
