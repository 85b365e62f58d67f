"""Drop attention masks that mask nothing from an exported graph.

A Hugging Face model traced for compression (torch.fx or torch.export) cannot skip its attention mask the way
its eager code does when no token is padding, so each scaled_dot_product_attention gets a Boolean mask that is
a constant all-True tensor expanded to the scores' shape. torch's exporter writes it as
`Softmax(scores + Where(mask, 0, -inf))` followed by `Where(IsNaN(p), 0, p)` (its guard for fully masked rows):
four elementwise ops on every (batch, heads, seq, seq) score tensor that change nothing. They cost the
32-wide zoo BERT about a tenth of its INT8 latency; the FP32 file, exported from the eager model, has none.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def _all_true_mask(name: str, producer: dict[str, onnx.NodeProto], consts: dict[str, np.ndarray]) -> bool:
    """`name` is a constant all-True tensor, possibly expanded (Expand only broadcasts its values)."""
    node = producer.get(name)
    while node is not None and node.op_type == "Expand":
        name = node.input[0]
        node = producer.get(name)
    value = consts.get(name)
    return value is not None and value.dtype == np.bool_ and bool(value.all())


def _is_zero(name: str, consts: dict[str, np.ndarray]) -> bool:
    value = consts.get(name)
    return value is not None and value.size > 0 and not np.any(value)


def drop_all_true_masks(model: onnx.ModelProto) -> int:
    """Remove `+ Where(all-True, 0, x)` before a Softmax and the NaN guard after it; returns how many Softmaxes.

    Exact: the mask adds zeros everywhere (scaled_dot_product_attention requires a mask to broadcast to the
    scores' shape, so the sum has the scores' shape), and with no -inf added no row is fully masked."""
    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    renamed: dict[str, str] = {}
    dropped = 0
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        add = producer.get(softmax.input[0])
        if add is None or add.op_type != "Add" or len(users[add.output[0]]) != 1:
            continue
        kept = None
        for i, name in enumerate(add.input):
            where = producer.get(name)
            if (
                where is not None
                and where.op_type == "Where"
                and _all_true_mask(where.input[0], producer, consts)
                and _is_zero(where.input[1], consts)
            ):
                kept = add.input[1 - i]
        if kept is None:
            continue
        softmax.input[0] = kept
        for isnan in [u for u in users.get(softmax.output[0], []) if u.op_type == "IsNaN"]:
            for guard in users.get(isnan.output[0], []):
                if (
                    guard.op_type == "Where"
                    and guard.input[2] == softmax.output[0]
                    and _is_zero(guard.input[1], consts)
                    and guard.output[0] not in outputs
                ):
                    renamed[guard.output[0]] = softmax.output[0]
        dropped += 1
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    _remove_dead_nodes(graph)
    return dropped


def _remove_dead_nodes(graph: onnx.GraphProto) -> None:
    """Drop nodes none of whose outputs is read (repeated: removing one can free its inputs' producers)."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if not any(out in used for out in node.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)
