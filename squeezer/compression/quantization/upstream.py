"""Where the quantizer of an op's input goes: at the producers upstream of it, found through the
scale-preserving ops between (a quantizer after a reshape or a max-pool equals one before it)."""

from __future__ import annotations

from typing import cast

import torch
from torch import fx, nn

from squeezer.compression.quantization.onnxruntime_rules import reads_shape
from squeezer.compression.quantization.op_kinds import (
    is_agnostic,
    is_behind_concat,
    is_concat,
    is_part_of_split,
    is_passthrough,
    is_tensor,
)


def chain_between(arg: fx.Node, producers: list[fx.Node], modules: dict[str, nn.Module]) -> set[fx.Node]:
    """The scale-preserving ops between `producers` and `arg` (included) that an input passes, with the ones
    that are not tensors: a tuple taken apart (`unbind`), an item of a shape that a reshape reads."""
    nodes: set[fx.Node] = set()
    stack = [arg]
    while stack:
        node = stack.pop()
        if node in nodes or node in producers or not is_agnostic(node, modules):
            continue
        nodes.add(node)
        stack.extend(node.all_input_nodes)
    return nodes


def branching_edges(
    chain: set[fx.Node], producers: list[fx.Node], modules: dict[str, nn.Module]
) -> set[tuple[fx.Node, fx.Node]]:
    """Edges (tensor, op) inside a scale-preserving `chain` from `producers` (chain_between) where the
    tensor has other readers too: GoogLeNet's max-pool feeds three convs and the next branch's max-pool.
    onnxruntime runs DequantizeLinear -> MaxPool -> QuantizeLinear on int8 only when the QuantizeLinear
    is the pool's sole reader, so the quantizer is applied again before the second pool as well (the
    same quantizer: a max-pool of grid values stays on the grid, so the numbers do not change)."""
    return {
        (source, node)
        for node in chain
        for source in node.all_input_nodes
        if is_tensor(source)
        and len(source.users) > 1
        and not is_passthrough(source, modules)
        and source not in producers
        and is_agnostic(source, modules)
    }


def upstream_producers(
    node: fx.Node,
    modules: dict[str, nn.Module],
    edges: list[tuple[fx.Node, fx.Node]],
    user: fx.Node,
    split_parts: bool = False,
) -> list[fx.Node] | None:
    """Producers feeding `node` through scale-preserving ops; None if a constant is among them.

    `split_parts` (the policy's `quantizes_concats_and_splits`: onnxruntime's): a part of a `chunk` /
    `split` (which returns a tuple, not a tensor) is a producer of its own, so the convs reading
    ShuffleNet's split halves get a quantized input; so is a concat, whose output is quantized besides
    its branches (sharing their quantizer, see `_share_concat_scale` in placement.py): onnxruntime runs
    it as QLinearConcat and a max-pool after it on int8 (GoogLeNet 1.79x -> 2.10x of FP32). It fuses
    DequantizeLinear -> Concat -> QuantizeLinear only when the QuantizeLinear is the concat's sole
    reader, so the concat's shape reads (ShuffleNet's channel shuffle asks `x.size()`) take the
    quantized tensor too, whose shape is the same."""
    if node.op == "get_attr":
        return None
    if split_parts and is_concat(node):
        edges.extend([(node, user), *((node, reader) for reader in node.users if reads_shape(reader))])
        return [node]
    if split_parts and is_part_of_split(node, modules):
        split = cast(fx.Node, node.args[0])  # chunk / split, checked by is_part_of_split
        source = split.args[0] if split.args else None
        if isinstance(source, fx.Node) and is_behind_concat(source, modules):
            return upstream_producers(source, modules, edges, split, split_parts)
        edges.append((node, user))
        return [node]
    if not is_agnostic(node, modules):
        if not is_tensor(node):
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
        sub = upstream_producers(inp, modules, edges, node, split_parts)
        if sub is None:
            return None
        found.extend(sub)
    return found
