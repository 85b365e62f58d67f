"""Post-process an exported QDQ graph into the form onnxruntime runs fast and stores small.

torch writes `QuantizeLinear(float weight) -> DequantizeLinear`; here the first node is evaluated
once so weights are stored as int8 initializers (4x smaller), and conv/gemm biases become int32
behind a DequantizeLinear with scale = input scale * weight scale, which onnxruntime's QDQ fusion
requires before it emits QLinearConv / QGemm (its own quantize_static does the same).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Turn Constant nodes (and Identity nodes of constants, which torch emits for shared scales)
    into initializers and return every constant tensor by name."""
    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    keep = []
    for node in graph.node:  # topological order: an Identity's input is known before it
        value = None
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            value = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in consts:
            value = consts[node.input[0]]
        if value is None or node.output[0] in {o.name for o in graph.output}:
            keep.append(node)
            continue
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        consts[node.output[0]] = value
    del graph.node[:]
    graph.node.extend(keep)
    return consts


def _quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    info = np.iinfo(zero_point.dtype)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zero_point = zero_point.reshape(shape)
    q = np.rint(x / scale) + zero_point.astype(np.int64)  # rint: half to even, as QuantizeLinear
    return np.clip(q, info.min, info.max).astype(zero_point.dtype)


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def fold_weight_quantization(model: onnx.ModelProto) -> int:
    """Replace QuantizeLinear on constants by pre-quantized initializers; returns how many."""
    consts = _constants(model)
    graph = model.graph
    folded = 0
    remove = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in consts:
            continue
        if node.input[1] not in consts or len(node.input) < 3 or node.input[2] not in consts:
            continue
        q = _quantize(consts[node.input[0]], consts[node.input[1]], consts[node.input[2]], _axis(node))
        name = f"{node.input[0]}_quantized"
        graph.initializer.append(numpy_helper.from_array(q, name))
        consts[name] = q
        for other in graph.node:
            for i, inp in enumerate(other.input):
                if inp == node.output[0]:
                    other.input[i] = name
        remove.append(node)
        folded += 1
    for node in remove:
        graph.node.remove(node)
    return folded


def quantize_biases(model: onnx.ModelProto) -> int:
    """Conv/Gemm with dequantized input and weight: store the bias as int32 (scale = s_x * s_w)."""
    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    done = 0
    new_nodes: list[tuple[int, onnx.NodeProto]] = []
    for idx, node in enumerate(graph.node):
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in consts:
            continue
        if node.op_type == "Gemm":
            attrs = {a.name: a for a in node.attribute}
            if ("transA" in attrs and attrs["transA"].i) or "transB" not in attrs or attrs["transB"].i != 1:
                continue
        dq_x, dq_w = producer.get(node.input[0]), producer.get(node.input[1])
        if not (dq_x and dq_w and dq_x.op_type == dq_w.op_type == "DequantizeLinear"):
            continue
        if dq_x.input[1] not in consts or dq_w.input[1] not in consts:
            continue
        sx = consts[dq_x.input[1]].astype(np.float64)
        sw = consts[dq_w.input[1]].astype(np.float64)
        if sx.size != 1 or (sw.size > 1 and _axis(dq_w) != 0):
            continue
        bias = consts[node.input[2]].astype(np.float64)
        scale = (float(sx.reshape(())) * sw.reshape(-1)) * np.ones_like(bias)
        ratio = np.rint(bias / scale)
        if not np.all(np.abs(ratio) <= np.iinfo(np.int32).max):
            # a tiny input scale (activations of ~1e-9) puts the bias outside int32: saturated, the layer
            # would compute something else (random GoogLeNet's classifier did); its bias stays float
            continue
        q = ratio.astype(np.int32)
        base = node.input[2]
        graph.initializer.extend(
            [
                numpy_helper.from_array(q, f"{base}_int32"),
                numpy_helper.from_array(scale.astype(np.float32), f"{base}_int32_scale"),
                numpy_helper.from_array(np.zeros_like(q), f"{base}_int32_zero_point"),
            ]
        )
        dq = helper.make_node(
            "DequantizeLinear",
            [f"{base}_int32", f"{base}_int32_scale", f"{base}_int32_zero_point"],
            [f"{base}_dequantized"],
            name=f"{base}_DequantizeLinear",
            axis=0,
        )
        node.input[2] = f"{base}_dequantized"
        new_nodes.append((idx, dq))
        done += 1
    for offset, (idx, dq) in enumerate(new_nodes):
        graph.node.insert(idx + offset, dq)
    return done


def remove_unused_initializers(model: onnx.ModelProto) -> None:
    graph = model.graph
    used = {i for node in graph.node for i in node.input} | {o.name for o in graph.output}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def shorten_names(model: onnx.ModelProto) -> None:
    """Short value names: each is stored once per use, a visible share of a small int8 file.
    `conv.parametrizations.weight.original` becomes `conv.weight`; generated names become `t<k>`."""

    graph = model.graph
    keep = {v.name for v in [*graph.input, *graph.output]}
    generated: dict[str, str] = {}

    def short(name: str) -> str:
        if name in keep or not name:
            return name
        if name.startswith(("/", "onnx::")):  # exporter-generated value names: number them
            return generated.setdefault(name, f"t{len(generated)}")
        return name.replace(".parametrizations.weight.original", ".weight").replace(
            ".parametrizations.weight.0.", ".weight_"
        )

    for init in graph.initializer:
        init.name = short(init.name)
    for node in graph.node:
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]


def rewrite(model: onnx.ModelProto) -> dict[str, int]:
    folded = fold_weight_quantization(model)
    biases = quantize_biases(model)
    remove_unused_initializers(model)
    shorten_names(model)
    onnx.checker.check_model(model)
    return {"int8_weights": folded, "int32_biases": biases}
