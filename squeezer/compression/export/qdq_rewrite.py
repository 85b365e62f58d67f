"""Post-process an exported QDQ graph into the form onnxruntime runs fast and stores small.

torch writes `QuantizeLinear(float weight) -> DequantizeLinear`; here the first node is evaluated
once so weights are stored as int8 initializers (4x smaller), and conv/gemm biases become int32
behind a DequantizeLinear with scale = input scale * weight scale, which onnxruntime's QDQ fusion
requires before it emits QLinearConv / QGemm (its own quantize_static does the same).
"""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import helper, numpy_helper

from squeezer.compression.export.mask_rewrite import drop_all_true_masks


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


def fold_weight_transposes(model: onnx.ModelProto) -> int:
    """`DequantizeLinear(int8 weight) -> Transpose -> MatMul` (a Linear applied to a 3-D input) becomes
    `DequantizeLinear(transposed int8 weight) -> MatMul`: onnxruntime fuses a MatMul into an integer
    kernel only when the DequantizeLinear feeds it directly. Returns how many were folded."""
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    remove = []
    for node in graph.node:
        dq = producer.get(node.input[0]) if node.op_type == "Transpose" else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[1] not in inits:
            continue
        if readers.get(dq.output[0]) != 1 or dq.output[0] in outputs or readers.get(dq.input[0]) != 1:
            continue
        q = numpy_helper.to_array(inits[dq.input[0]])
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), list(range(q.ndim))[::-1])
        inits[dq.input[0]].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(q.transpose(perm)), dq.input[0]))
        if numpy_helper.to_array(inits[dq.input[1]]).size > 1:  # per-channel: the channel axis moves
            old = _axis(dq) % q.ndim
            del dq.attribute[:]
            dq.attribute.append(helper.make_attribute("axis", perm.index(old)))
        dq.output[0] = node.output[0]
        remove.append(node)
    for node in remove:
        graph.node.remove(node)
    return len(remove)


def _data_dependent(graph: onnx.GraphProto) -> set[str]:
    """Names of the tensors whose values depend on the graph's input values (not only on their shapes)."""
    data = {value.name for value in graph.input}
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type not in ("Shape", "Size") and any(name in data for name in node.input):
            data.update(node.output)
    return data


def gather_before_dequantize(model: onnx.ModelProto) -> int:
    """`DequantizeLinear(int8 table) -> Gather(ids)` (an embedding) becomes `Gather(int8 table, ids)` then
    dequantize the gathered rows: onnxruntime keeps DequantizeLinear out of constant folding, so the first form
    dequantizes the whole table on every call (a 30522 x 768 vocabulary: 23M values per inference). Per-row
    scales are gathered with the rows and multiplied; a per-tensor or per-column grid stays a DequantizeLinear.
    Returns how many Gathers were rewritten.

    Only gathers whose ids are the model's data (token ids) are rewritten, not those whose ids are
    computed from constants and shapes (position ids `arange(seq_len)`, all-zero token types): OpenVINO
    folds those to a constant int8 tensor and its low-precision AddTransformation then fails on the
    embedding sum ("index '0' out of range", zoo BERT), while their tables are small (512 positions)."""
    graph = model.graph
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    data = _data_dependent(graph)
    rewritten = 0
    new_nodes: list[tuple[onnx.NodeProto, list[onnx.NodeProto]]] = []
    for node in graph.node:
        dq = producer.get(node.input[0]) if node.op_type == "Gather" else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or len(dq.input) < 3:
            continue
        if node.input[1] not in data:
            continue
        table, scale, zero_point = (inits.get(name) for name in dq.input[:3])
        gather_axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if table is None or scale is None or zero_point is None or table.ndim != 2 or gather_axis != 0:
            continue
        base = node.output[0]
        rows = helper.make_node("Gather", [dq.input[0], node.input[1]], [f"{base}_q"], name=f"{base}_gather_q")
        if scale.size == 1 or _axis(dq) % 2 == 1:  # the grid does not vary along the gathered rows
            axis = [] if scale.size == 1 else [helper.make_attribute("axis", -1)]
            dequantize = helper.make_node("DequantizeLinear", [f"{base}_q", *dq.input[1:3]], [base], name=base)
            dequantize.attribute.extend(axis)
            new_nodes.append((node, [rows, dequantize]))
        elif not np.any(zero_point):  # per-row symmetric grid: real row = int8 row * its step
            axes = f"{base}_unsqueeze_axes"
            graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), axes))
            steps = helper.make_node("Gather", [dq.input[1], node.input[1]], [f"{base}_s"], name=f"{base}_gather_s")
            column = helper.make_node("Unsqueeze", [f"{base}_s", axes], [f"{base}_s1"], name=f"{base}_unsqueeze")
            as_float = helper.make_node(
                "Cast", [f"{base}_q"], [f"{base}_f"], name=f"{base}_cast", to=onnx.TensorProto.FLOAT
            )
            scaled = helper.make_node("Mul", [f"{base}_f", f"{base}_s1"], [base], name=f"{base}_scale")
            new_nodes.append((node, [rows, steps, column, as_float, scaled]))
        else:
            continue
        rewritten += 1
    for old, replacement in new_nodes:
        index = list(graph.node).index(old)
        graph.node.remove(old)
        for offset, new in enumerate(replacement):
            graph.node.insert(index + offset, new)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for node in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] not in used]:
        graph.node.remove(node)  # a table read by Gathers only
    return rewritten


def shapes_before_dequantize(model: onnx.ModelProto) -> int:
    """`DequantizeLinear(q) -> Shape` (or `Size`) reads the quantized tensor `q` instead, which has the same
    shape. onnxruntime gives each reader of a quantized activation a DequantizeLinear of its own, so each
    shape read dequantized the whole tensor on every call: ShuffleNetV2's channel shuffle reads four dims
    of each block's quantized concat, 64 full dequantizations per inference (0.6 of its 4 ms at batch 1). A
    DequantizeLinear left without readers is dropped. Returns how many shape reads were rewired."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    rewired = 0
    for node in graph.node:
        dq = producer.get(node.input[0]) if node.op_type in ("Shape", "Size") else None
        if dq is not None and dq.op_type == "DequantizeLinear":
            node.input[0] = dq.input[0]
            rewired += 1
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for node in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] not in used]:
        graph.node.remove(node)
    return rewired


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
        name = re.sub(r"\.parametrizations\.(\w+)\.original", r".\1", name)  # also MHA's in_proj_weight
        return re.sub(r"\.parametrizations\.(\w+)\.0\.", r".\1_", name)

    for init in graph.initializer:
        init.name = short(init.name)
    for node in graph.node:
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]


def rewrite(model: onnx.ModelProto) -> dict[str, int]:
    folded = fold_weight_quantization(model)
    transposes = fold_weight_transposes(model)
    gathers = gather_before_dequantize(model)
    masks = drop_all_true_masks(model)
    biases = quantize_biases(model)
    shapes = shapes_before_dequantize(model)
    remove_unused_initializers(model)
    shorten_names(model)
    onnx.checker.check_model(model)
    return {
        "int8_weights": folded,
        "int32_biases": biases,
        "weight_transposes_folded": transposes,
        "int8_gathers": gathers,
        "all_true_masks_dropped": masks,
        "shapes_of_int8": shapes,
    }
