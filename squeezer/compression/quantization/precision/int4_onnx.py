"""Optional INT4 storage for an exported mixed-precision ONNX file (opset 21 INT4/UINT4 initializers).

The export keeps 4-bit weights in int8 containers (levels -8..7): onnxruntime then fuses every layer
into QLinearConv / QGemm. With INT4 initializers onnxruntime 1.32 still runs the file and it is
smaller, but it dequantizes those weights and runs float kernels: a digits ResidualCNN with 4 of 10
layers at 4 bits (HAWQ, ratio 1.5) became 0.67x the size and 3.05x slower (bench/bench_hawq.py). So
this is a separate, explicit step for size-bound deployments, not the default.
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, numpy_helper, version_converter

INT4_OPSET = 21  # the first opset whose DequantizeLinear takes INT4 / UINT4
INT4_IR_VERSION = 10


def _as_4bit(array: np.ndarray) -> int | None:
    """The 4-bit ONNX type that holds `array` exactly, or None."""
    if array.dtype == np.int8 and array.size and array.min() >= -8 and array.max() <= 7:
        return TensorProto.INT4
    if array.dtype == np.uint8 and array.size and array.max() <= 15:
        return TensorProto.UINT4
    return None


def _packed(array: np.ndarray, kind: int, name: str) -> onnx.TensorProto:
    """Two values per byte in raw_data (helper.make_tensor would spend a varint per value)."""
    dtype = ml_dtypes.int4 if kind == TensorProto.INT4 else ml_dtypes.uint4
    return numpy_helper.from_array(array.astype(dtype), name)


def pack_int4_weights(source: str | Path, target: str | Path) -> int:
    """Write `source` to `target` with every DequantizeLinear weight whose values fit in 4 bits stored
    as INT4/UINT4 (with its zero point), at opset 21; returns how many weights were packed."""
    model = onnx.load(str(source))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < INT4_OPSET:
        model = version_converter.convert_version(model, INT4_OPSET)
    model.ir_version = max(model.ir_version, INT4_IR_VERSION)
    inits = {init.name: init for init in model.graph.initializer}
    users: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, set()).add(node.op_type)
    packed = 0
    converted: dict[str, int] = {}  # weight name -> its 4-bit type
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3:
            continue
        weight, zp_name = node.input[0], node.input[2]
        if weight not in inits or zp_name not in inits or users.get(weight) != {"DequantizeLinear"}:
            continue
        zero_point = numpy_helper.to_array(inits[zp_name])
        if weight in converted:
            kind: int | None = converted[weight]
        else:
            values = numpy_helper.to_array(inits[weight])
            kind = _as_4bit(values)
            if kind is None or _as_4bit(zero_point) != kind:
                continue
            inits[weight].CopyFrom(_packed(values, kind, weight))
            converted[weight] = kind
        if kind is None or _as_4bit(zero_point) != kind:
            continue
        # a zero point of its own: torch shares zero-point constants with 8-bit weights
        own_zp = f"{weight}_zero_point4"
        if own_zp not in inits:
            inits[own_zp] = _packed(zero_point, kind, own_zp)
            model.graph.initializer.append(inits[own_zp])
        node.input[2] = own_zp
        packed += 1
    used = {name for node in model.graph.node for name in node.input}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return packed
