"""Export a compressed model to standard ONNX and check it in onnxruntime before returning.

Steps: copy the model to CPU in eval mode; fold BatchNorm into the conv or Linear whose output
it normalizes (exact for per-channel weight grids: the int8 values stay, the channel scale is
multiplied); replace every quantizer by a plain fake-quantize call with Python-number scales
(uint8 activations, int8 weights: what onnxruntime fuses); export with a dynamic batch dimension;
store weights as int8 and biases as int32; run the file in onnxruntime and compare with the torch
model.

The steps' homes: `prepare` builds the export copy (BatchNorm folds from `bn_fold`, the QDQ modules from
`qdq_modules`), this module exports it, `qdq_rewrite` stores the integer weights, `verify` is the check.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import fx, nn

from squeezer.compression.export.prepare import build_export_model
from squeezer.compression.export.qdq_modules import ActivationQDQ, Grid, WeightQDQ, grid_of
from squeezer.compression.export.qdq_rewrite import rewrite
from squeezer.compression.export.verify import (
    NOISE_FACTOR,
    ROUNDING_JITTER,
    parity_bound,
    rounding_noise,
    verify_onnx,
)
from squeezer.compression.init_args import flatten_tensors
from squeezer.errors import ExportError

# the names above from the modules this one was split into, where callers have always imported them
__all__ = [
    "DEFAULT_OPSET",
    "MAX_OPSET",
    "NOISE_FACTOR",
    "ROUNDING_JITTER",
    "ActivationQDQ",
    "Grid",
    "WeightQDQ",
    "build_export_model",
    "export_onnx",
    "grid_of",
    "ordered_args",
    "parity_bound",
    "rounding_noise",
    "verify_onnx",
]

logger = logging.getLogger(__name__)
# 14, not 13 (the lowest that holds per-channel QuantizeLinear): below 14 Hardswish exports as HardSigmoid and
# Mul, which OpenVINO does not fuse into the conv before it when quantizers surround them (MobileNetV3-small
# ran 0.72x FP32 at 13, 1.20x at 14; NNCF's own IR 1.34x). Raised when the graph needs more.
DEFAULT_OPSET = 14
MAX_OPSET = 20  # the newest torch's TorchScript exporter writes
CLIP_OPSET = 11  # Clip takes its bounds as inputs from 11 on
SDPA_OPSET = 14  # the first opset torch's exporter writes scaled_dot_product_attention for


def ordered_args(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Positional arguments in forward order (keywords from input_info placed by name)."""
    if not kwargs:
        return tuple(args)
    if isinstance(model, fx.GraphModule):
        names = [str(n.target) for n in model.graph.nodes if n.op == "placeholder"]
    else:
        import inspect

        names = list(inspect.signature(model.forward).parameters)
    ordered = list(args)
    for name in names[len(args) :]:
        if name not in kwargs:
            break
        ordered.append(kwargs[name])
    return tuple(ordered)


def export_onnx(
    model: nn.Module,
    save_path: str | Path,
    example_args: tuple[Any, ...],
    example_kwargs: dict[str, Any] | None = None,
    *,
    opset: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    verify: bool = True,
    verify_inputs: tuple[tuple[Any, ...], dict[str, Any]] | None = None,
    rtol: float = 0.05,
) -> Path:
    """Export `model` (compressed or stripped) to standard ONNX and verify it in onnxruntime.

    Without `opset`, the file gets opset 14 (`DEFAULT_OPSET`), or the lowest newer one that every op of
    the graph exports to (grid_sample needs 16); the log names it and why.
    `rtol` bounds the largest absolute difference relative to the largest output magnitude; a
    float rounding can move a value by one quantization step, so the check is not bit-exact.
    """
    path = Path(save_path)
    if path.is_symlink():
        raise ExportError(f"refusing to export to a symbolic link: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    export_model = build_export_model(model)
    args = ordered_args(export_model, example_args, example_kwargs or {})
    args = tuple(a.detach().cpu() if isinstance(a, torch.Tensor) else a for a in args)
    with torch.no_grad():
        n_out = len(flatten_tensors(export_model(*args)))
    in_names = list(input_names or [f"input.{i}" for i in range(len(args))])
    out_names = list(output_names or [f"output.{i}" for i in range(n_out)])
    used_opset, reason = _export_lowest_opset(export_model, args, path, opset, in_names, out_names)
    onnx_model = onnx.load(str(path))
    counts = rewrite(onnx_model)
    tmp = path.with_suffix(path.suffix + ".tmp")
    onnx.save(onnx_model, str(tmp))
    os.replace(tmp, path)
    logger.info("exported %s at ONNX opset %d (%s) (%s)", path, used_opset, reason, counts)
    if verify:
        check_args, check_kwargs = verify_inputs or (example_args, example_kwargs or {})
        ordered = ordered_args(export_model, check_args, check_kwargs)
        verify_onnx(model, path, ordered, in_names, rtol, noise=rounding_noise(export_model, ordered))
    return path


@contextlib.contextmanager
def _quiet_failed_attempt() -> Iterator[None]:
    """Hold back what the exporter prints to stdout and drop it if the attempt raises. torch 2.13's
    TorchScript exporter always enables its C++ log (it tests the function `_jit_is_onnx_log_enabled`,
    not its result), so each opset that is too low dumps the whole IR graph before the retry."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 1)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            if not failed:
                held.seek(0)
                sys.stdout.write(held.read().decode(errors="replace"))


def _hardsigmoid_as_clip(g: Any, x: Any) -> Any:
    """Hardsigmoid written `clip(x + 3, 0, 6) / 6`, the form OpenVINO's HSigmoid fusion matches and then
    fuses into the conv before it. ONNX's HardSigmoid op becomes a separate reference kernel with two
    layout reorders around it: MobileNetV3-small's nine FP32 gates ran 1.39x FP32 in OpenVINO as
    HardSigmoid, 1.47x as clip (onnxruntime: 0.35x either way). A hardsigmoid of a dequantized tensor
    (onnxruntime's placement quantizes the gate) stays one op: onnxruntime ran that file 0.80x FP32 with
    HardSigmoid, 0.64x with the clip form."""
    quantized_input = x.node().kind() == "onnx::DequantizeLinear"
    if quantized_input or x.type().scalarType() not in (None, "Float"):  # the constants below are float32
        return g.op("HardSigmoid", x, alpha_f=1.0 / 6.0)
    zero, three, six = (g.op("Constant", value_t=torch.tensor(v)) for v in (0.0, 3.0, 6.0))
    return g.op("Div", g.op("Clip", g.op("Add", x, three), zero, six), six)


def _attention_scaled_once(
    g: Any,
    query: Any,
    key: Any,
    value: Any,
    attn_mask: Any = None,
    dropout_p: Any = 0.0,
    is_causal: Any = False,
    scale: Any = None,
    enable_gqa: Any = False,
) -> Any:
    """scaled_dot_product_attention as `softmax((query * scale) @ key^T + mask) @ value`, the default scale
    1/sqrt(head size) a constant when the head size is known.

    torch's own ONNX form computes that scale from the query's shape on every run (Shape, Slice, Cast, Sqrt,
    Div) and multiplies both the query and the transposed key by its square root. The multiply between the
    Transpose and the MatMul kept OpenVINO from folding the transpose into the matmul: DeiT-tiny ran 4-10%
    faster in OpenVINO with the scale applied once, to the query (onnxruntime the same or faster). A causal
    mask, dropout or grouped-query attention take torch's form (with the constant scale)."""
    from torch.onnx import symbolic_helper, symbolic_opset14

    sizes = symbolic_helper._get_tensor_sizes(query)
    if symbolic_helper._is_none(scale) and sizes and isinstance(sizes[-1], int):
        scale = g.op("Constant", value_t=torch.tensor(1.0 / math.sqrt(sizes[-1])))
    rank = symbolic_helper._get_tensor_rank(key)
    plain = not any(
        symbolic_helper._maybe_get_const(flag, "b") is not False for flag in (is_causal, enable_gqa)
    ) and symbolic_helper._maybe_get_const(dropout_p, "f") in (0, 0.0)
    mask_type = None if symbolic_helper._is_none(attn_mask) else attn_mask.type().scalarType()
    if not plain or symbolic_helper._is_none(scale) or rank is None or mask_type not in (None, "Bool", "Float"):
        return symbolic_opset14.scaled_dot_product_attention(
            g, query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa
        )
    perm = [*range(rank - 2), rank - 1, rank - 2]
    scores = g.op("MatMul", g.op("Mul", query, scale), g.op("Transpose", key, perm_i=perm))
    if mask_type == "Bool":  # False masks out: -inf before the softmax, and a row masked out entirely is 0
        zero, minus_inf = (g.op("Constant", value_t=torch.tensor([v])) for v in (0.0, -math.inf))
        weights = g.op("Softmax", g.op("Add", scores, g.op("Where", attn_mask, zero, minus_inf)), axis_i=-1)
        weights = g.op("Where", g.op("IsNaN", weights), zero, weights)
    else:
        weights = g.op("Softmax", scores if mask_type is None else g.op("Add", scores, attn_mask), axis_i=-1)
    return g.op("MatMul", weights, value)


@contextlib.contextmanager
def _custom_symbolics() -> Iterator[None]:
    """Squeezer's ONNX forms of some ops, for the duration of one export (the registry is global)."""
    forms: dict[tuple[str, int], Callable[..., Any]] = {
        ("aten::hardsigmoid", CLIP_OPSET): _hardsigmoid_as_clip,
        ("aten::scaled_dot_product_attention", SDPA_OPSET): _attention_scaled_once,
    }
    for (name, opset), symbolic in forms.items():
        torch.onnx.register_custom_op_symbolic(name, symbolic, opset)
    try:
        yield
    finally:
        for name, opset in forms:
            torch.onnx.unregister_custom_op_symbolic(name, opset)


def _export_lowest_opset(
    model: nn.Module,
    args: tuple[Any, ...],
    path: Path,
    opset: int | None,
    in_names: list[str],
    out_names: list[str],
) -> tuple[int, str]:
    """torch.onnx.export at `opset`, or else at the lowest opset the graph allows; (opset, why)."""
    dynamic = {n: {0: "batch"} for n in [*in_names, *out_names]}
    version = opset if opset is not None else DEFAULT_OPSET
    reason = "requested" if opset is not None else "the default"
    while True:
        try:
            with warnings.catch_warnings(), _quiet_failed_attempt(), _custom_symbolics():
                warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
                torch.onnx.export(
                    model,
                    args,
                    str(path),
                    dynamo=False,
                    opset_version=version,
                    input_names=in_names,
                    output_names=out_names,
                    dynamic_axes=dynamic,
                    do_constant_folding=True,
                )
            return version, reason
        except torch.onnx.errors.UnsupportedOperatorError as e:
            needed = re.search(r"added in version (\d+)", str(e))
            if opset is not None:
                hint = f"; export with save_format='onnx_{needed[1]}'" if needed else ""
                raise ExportError(f"{e}{hint}") from e
            if needed is None or not version < int(needed[1]) <= MAX_OPSET:
                raise ExportError(
                    f"{e}: no ONNX opset up to {MAX_OPSET} (the newest torch's exporter writes) has it; "
                    "replace that op in the model or keep it out of the exported part"
                ) from e
            op = re.search(r"operator '([^']+)'", str(e))
            version = int(needed[1])
            reason = f"{op[1] if op else 'an operator'} needs it"
