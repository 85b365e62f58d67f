"""Export a compressed model to standard ONNX and check it in onnxruntime before returning.

Steps: copy the model to CPU in eval mode; fold BatchNorm into the conv or Linear whose output
it normalizes (exact for per-channel weight grids: the int8 values stay, the channel scale is
multiplied); replace every quantizer by a plain fake-quantize call with Python-number scales
(uint8 activations, int8 weights: what onnxruntime fuses); export with a dynamic batch dimension;
store weights as int8 and biases as int32; run the file in onnxruntime and compare with the torch
model.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import torch
from torch import fx, nn
from torch.ao.quantization import FakeQuantize
from torch.nn.utils import parametrize

from squeezer.compression.export.qdq_rewrite import rewrite
from squeezer.compression.graph.modules import registration
from squeezer.compression.graph.surgery import (
    original_class,
    replace_submodule,
    unparametrized_copy,
    weight_parametrizations,
)
from squeezer.compression.graph.trace import tensor_meta
from squeezer.compression.init_args import flatten_tensors
from squeezer.compression.quantization.placement import ACTIVATIONS_ATTR, attention_projections
from squeezer.compression.quantization.quantizer import FakeQuantizer
from squeezer.errors import ExportError

logger = logging.getLogger(__name__)
DEFAULT_OPSET = 13  # the lowest that holds per-channel QuantizeLinear; raised when the graph needs more
MAX_OPSET = 20  # the newest torch's TorchScript exporter writes
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_aten = torch.ops.aten
# x.reshape_as(y) reads only y's shape; as fx methods and as the aten ops of a lifted torch.export graph
_SHAPE_OF_OTHER = ("reshape_as", "view_as", "expand_as", _aten.reshape_as.default, _aten.view_as.default)
_SHAPE_READS = ("size", "dim", _aten.sym_size.int)


@dataclass
class Grid:
    """Integer grid of a quantizer: real = (q - zero_point) * step, q in [qmin, qmax]."""

    step: torch.Tensor  # () or (C,)
    zero_point: torch.Tensor  # int64, same shape
    qmin: int
    qmax: int
    axis: int | None


def grid_of(q: nn.Module) -> Grid | None:
    """The grid of a Squeezer quantizer or a torch FakeQuantize; None when it is disabled."""
    if isinstance(q, FakeQuantizer):
        if not q.is_enabled:
            return None
        step, zp, qmin, qmax = q.qparams()
        axis = q.axis
        if axis is None:
            return Grid(step.reshape(()), zp.reshape(()).long(), qmin, qmax, None)
        return Grid(step.flatten(), zp.flatten().long(), qmin, qmax, axis)
    if isinstance(q, FakeQuantize):
        if not bool(q.fake_quant_enabled.item()):
            return None
        per_channel = q.is_per_channel
        step = q.scale.detach().float()
        zp = q.zero_point.detach().long()
        if not per_channel:
            return Grid(step.reshape(()), zp.reshape(()), q.quant_min, q.quant_max, None)
        return Grid(step.flatten(), zp.flatten(), q.quant_min, q.quant_max, q.ch_axis)
    return None


def _bcast(t: torch.Tensor, axis: int | None, ndim: int) -> torch.Tensor:
    if axis is None or t.dim() == 0:
        return t
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


class ActivationQDQ(nn.Module):
    """Exports as QuantizeLinear/DequantizeLinear with uint8 zero point (onnxruntime's fast path)."""

    jitter = 0.0  # relative noise put on the input by `rounding_noise`; 0 in the export

    step_t: torch.Tensor
    zp_t: torch.Tensor

    def __init__(self, grid: Grid) -> None:
        super().__init__()
        self.axis = grid.axis
        self.qmin, self.qmax = grid.qmin, grid.qmax
        zp = grid.zero_point - grid.qmin  # shift the grid into [0, 255]
        if grid.axis is None:
            self.step = float(grid.step)
            self.zp = int(zp)
            self.lo = (grid.qmin - int(grid.zero_point)) * self.step
            self.hi = (grid.qmax - int(grid.zero_point)) * self.step
        else:
            self.register_buffer("step_t", grid.step.float())
            self.register_buffer("zp_t", zp.int())
        self.needs_clamp = grid.qmax - grid.qmin < 255

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.jitter:
            x = x * (1 + self.jitter * torch.randn_like(x))
        if self.axis is None:
            if self.needs_clamp:
                x = x.clamp(self.lo, self.hi)
            return torch.fake_quantize_per_tensor_affine(x, self.step, self.zp, 0, 255)
        return torch.fake_quantize_per_channel_affine(x, self.step_t, self.zp_t, self.axis, 0, 255)


class WeightQDQ(nn.Module):
    """Weight parametrization that exports as QuantizeLinear/DequantizeLinear (folded to int8 later)."""

    step: torch.Tensor
    zp: torch.Tensor

    def __init__(self, step: torch.Tensor, zero_point: torch.Tensor, axis: int, qmin: int, qmax: int) -> None:
        super().__init__()
        self.register_buffer("step", step.float().contiguous())
        self.register_buffer("zp", zero_point.int().contiguous())
        self.axis, self.qmin, self.qmax = axis, qmin, qmax

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_channel_affine(w, self.step, self.zp, self.axis, self.qmin, self.qmax)


def _weight_quantizer(module: nn.Module, tensor: str = "weight") -> nn.Module | None:
    return next(
        (p for p in weight_parametrizations(module, tensor) if isinstance(p, (FakeQuantizer, FakeQuantize))), None
    )


def _on_export_grid(weight: torch.Tensor, grid: Grid, out_axis: int, k: torch.Tensor) -> tuple[torch.Tensor, WeightQDQ]:
    """`weight` (on `grid`) times the per-output-channel factor `k` (a folded BatchNorm's; ones without one),
    as a per-channel int8 grid and the parametrization that exports it as QuantizeLinear/DequantizeLinear."""
    n_out = weight.shape[out_axis]
    step = grid.step.expand(n_out) if grid.axis is None else grid.step
    zp = grid.zero_point.expand(n_out) if grid.axis is None else grid.zero_point
    if grid.axis not in (None, out_axis):
        raise ExportError(f"weight quantized along axis {grid.axis}, expected output axis {out_axis}")
    q = torch.round(weight / _bcast(step, out_axis, weight.dim())) + _bcast(zp, out_axis, weight.dim())
    q = q.clamp(grid.qmin, grid.qmax)
    neg = k < 0
    if neg.any():
        # (q - zp) * s * k with k < 0 equals (q' - zp') * s * |k| on the mirrored grid.
        mirror = grid.qmin + grid.qmax if bool((zp != 0).any()) else 0
        sign = _bcast(neg, out_axis, weight.dim())
        q = torch.where(sign, mirror - q, q)
        zp = torch.where(neg, mirror - zp, zp)
    step = step * k.abs()
    cmin, cmax = (-128, 127) if grid.qmin < 0 else (0, 255)
    q = q.clamp(cmin, cmax)
    new_weight = (q - _bcast(zp, out_axis, weight.dim())) * _bcast(step, out_axis, weight.dim())
    return new_weight, WeightQDQ(step, zp, out_axis, cmin, cmax)


def _to_export_weight(module: nn.Module, bn: nn.Module | None) -> nn.Module:
    """`module` with `bn` folded in and a per-channel int grid on its weight (if it was quantized)."""
    quantizer = _weight_quantizer(module)
    grid = grid_of(quantizer) if quantizer is not None else None
    with torch.no_grad():
        weight = cast(torch.Tensor, module.weight).detach().clone()  # fake-quantized when quantized
        old_bias = cast(torch.Tensor | None, getattr(module, "bias", None))
        bias = old_bias.detach().clone() if old_bias is not None else None
    module = unparametrized_copy(module)
    out_axis = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
    registered = registration(module)
    if registered is not None:  # e.g. Hugging Face's Conv1D keeps its weight (in, out)
        out_axis = registered["weight_dim"]
    n_out = weight.shape[out_axis]
    k = torch.ones(n_out)
    if bn is not None:
        norm = cast(nn.modules.batchnorm._BatchNorm, bn)
        assert norm.running_var is not None and norm.running_mean is not None
        affine = norm.weight is not None  # BatchNorm(affine=False) has no scale and shift
        gamma = norm.weight.detach() if affine else torch.ones(n_out)
        beta = norm.bias.detach() if affine else torch.zeros(n_out)
        k = gamma / torch.sqrt(norm.running_var + norm.eps)
        b = bias if bias is not None else torch.zeros(n_out)
        bias = (b - norm.running_mean) * k + beta
    qdq: WeightQDQ | None = None
    if grid is None:
        new_weight = weight * _bcast(k, out_axis, weight.dim())
    else:
        new_weight, qdq = _on_export_grid(weight, grid, out_axis, k)
    module.weight = nn.Parameter(new_weight.float(), requires_grad=False)
    if bias is not None:
        module.bias = nn.Parameter(bias.float(), requires_grad=False)
    if qdq is not None:
        parametrize.register_parametrization(module, "weight", qdq)
    return module


def _quantized_projections(module: nn.Module) -> list[str]:
    """The in-projection matrices of an nn.MultiheadAttention that carry a weight quantizer."""
    if not isinstance(module, nn.MultiheadAttention):
        return []
    return [t for t in attention_projections(module) if _weight_quantizer(module, t) is not None]


def _to_export_attention(module: nn.Module) -> nn.Module:
    """nn.MultiheadAttention with its quantized in-projections on a per-row int8 grid; its forward applies
    them as `linear`, so each exports as DequantizeLinear(int8) -> MatMul (out_proj is a layer of its own)."""
    tensors = _quantized_projections(module)
    grids = {t: grid_of(cast(nn.Module, _weight_quantizer(module, t))) for t in tensors}
    with torch.no_grad():
        values = {t: cast(torch.Tensor, getattr(module, t)).detach().clone() for t in tensors}  # on the grid
    new = unparametrized_copy(module)
    for t in tensors:
        grid, weight = grids[t], values[t]
        qdq = None if grid is None else _on_export_grid(weight, grid, 0, torch.ones(weight.shape[0]))
        setattr(new, t, nn.Parameter(weight if qdq is None else qdq[0], requires_grad=False))
        if qdq is not None:
            parametrize.register_parametrization(new, t, qdq[1])
    return new


def _norm_act_tail(bn: nn.Module) -> nn.Module | None:
    """What is left of timm's BatchNormAct2d (BatchNorm, then `drop`, then `act`) once its BatchNorm is
    folded into the conv before it; None for any other module. Unfolded, it keeps onnxruntime from
    fusing that conv (EfficientNet-Lite0 ran at 0.30x of FP32 speed in INT8)."""
    cls = original_class(bn)
    if cls.__name__ != "BatchNormAct2d" or not cls.__module__.startswith("timm."):
        return None
    return nn.Sequential(cast(nn.Module, bn.drop), cast(nn.Module, bn.act))


def _channel_source(bn: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The conv or Linear call whose output channels are, one for one, the channels that the BatchNorm call
    `bn` normalizes, its output used on the way to `bn` only; None where folding would not be exact.

    A conv's channels are axis 1, BatchNorm's axis. A Linear's are its last axis: the same only when
    BatchNorm gets them as (N, C), the Linear's own 2-D output or its output with the leading axes merged
    (timm's LeViT: `bn(linear(x).flatten(0, 1))`). On (N, L, C), BatchNorm1d normalizes L: never folded.
    """
    src = bn.args[0]
    if not (isinstance(src, fx.Node) and _one_value_use(src)):
        return None
    if src.op == "call_module" and isinstance(modules[str(src.target)], _CONVS):
        return src
    if original_class(modules[str(bn.target)]) is not nn.BatchNorm1d:
        return None
    shape = tensor_meta(src)
    if shape is None or len(shape) != 2:
        return None
    if _merges_leading_axes(src):  # (..., C) -> (M, C) in row-major order: the same C channels
        inner = src.args[0]
        if not (isinstance(inner, fx.Node) and _one_value_use(inner)):
            return None
        inner_shape = tensor_meta(inner)
        if inner_shape is None or inner_shape[-1] != shape[-1]:
            return None
        src = inner
    if src.op == "call_module" and isinstance(modules[str(src.target)], nn.Linear):
        return src
    return None


def _one_value_use(node: fx.Node) -> bool:
    """`node`'s value has one user; any others read its shape only (LeViT's `reshape_as(h)`), which a fold keeps."""
    shape_only = [
        u
        for u in node.users
        if u.op in ("call_method", "call_function")
        and (
            (u.target in _SHAPE_OF_OTHER and u.args[0] is not node)
            or u.target in _SHAPE_READS
            or (u.target is getattr and u.args[1:] == ("shape",))
        )
    ]
    return len(node.users) - len(shape_only) == 1


def _merges_leading_axes(node: fx.Node) -> bool:
    """A reshape: one that keeps the last axis merges the leading ones (the caller checks the shapes)."""
    if node.op == "call_method":
        return node.target in ("flatten", "reshape", "view")
    return node.op == "call_function" and node.target in (torch.flatten, torch.reshape)


def build_export_model(model: nn.Module) -> nn.Module:
    """A CPU, eval-mode copy of `model` made of ops that export to standard QDQ ONNX."""
    export = copy.deepcopy(model).cpu().eval()
    _check_finite_ranges(export)
    folded: dict[nn.Module, nn.Module] = {}
    if isinstance(export, fx.GraphModule):
        modules = dict(export.named_modules())
        for node in list(export.graph.nodes):
            if node.op != "call_module" or not isinstance(modules[str(node.target)], _BNS):
                continue
            src = _channel_source(node, modules)
            if src is None:
                continue
            layer = modules[str(src.target)]
            bn = modules[str(node.target)]
            tail = _norm_act_tail(bn)
            # the exact BatchNorm classes, or a known norm + activation: a subclass may do more
            if original_class(bn) not in _BNS and tail is None:
                continue
            if not bn.track_running_stats or layer in folded:
                continue
            folded[layer] = bn
            if tail is not None:  # the normalization goes into the conv; its activation stays
                replace_submodule(export, str(node.target), tail)
                continue
            node.replace_all_uses_with(node.args[0])
            export.graph.erase_node(node)
        _short_quantizer_targets(export)
        export.graph.lint()
        export.recompile()
    for name, module in list(export.named_modules()):
        if _quantized_projections(module):
            replace_submodule(export, name, _to_export_attention(module))
        elif module in folded or _weight_quantizer(module) is not None:
            replace_submodule(export, name, _to_export_weight(module, folded.get(module)))
    for name, module in list(export.named_modules()):
        if isinstance(module, (FakeQuantizer, FakeQuantize)):
            grid = grid_of(module)
            replace_submodule(export, name, ActivationQDQ(grid) if grid is not None else nn.Identity())
    return export


def _check_finite_ranges(model: nn.Module) -> None:
    """A quantizer whose range went NaN/inf (training diverged) cannot give an integer grid: say where."""
    bad = [
        re.sub(r"\.parametrizations\.(\w+)\.0$", r".\1", name).replace(f"{ACTIVATIONS_ATTR}.", "")
        for name, q in model.named_modules()
        if isinstance(q, FakeQuantizer) and not all(bool(torch.isfinite(p).all()) for p in q.parameters())
    ]
    if bad:
        raise ExportError(
            f"{len(bad)} quantizers have a range that is not finite (training diverged; lower the learning "
            f"rate or the compression_lr_multiplier): {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
        )


def _short_quantizer_targets(gm: fx.GraphModule) -> None:
    """Call activation quantizers as `aq<k>`: their ids are long and ONNX repeats names per use."""
    if not hasattr(gm, ACTIVATIONS_ATTR):
        return
    short: dict[str, str] = {}
    for node in gm.graph.nodes:
        target = str(node.target)
        if node.op == "call_module" and target.startswith(ACTIVATIONS_ATTR + "."):
            if target not in short:
                short[target] = f"aq{len(short)}"
                gm.add_submodule(short[target], gm.get_submodule(target))
            node.target = short[target]
    delattr(gm, ACTIVATIONS_ATTR)


def _ordered_args(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
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

    Without `opset`, the file gets the lowest opset (13 or newer) that every op of the graph
    exports to (scaled_dot_product_attention needs 14); the log names it and why.
    `rtol` bounds the largest absolute difference relative to the largest output magnitude; a
    float rounding can move a value by one quantization step, so the check is not bit-exact.
    """
    path = Path(save_path)
    if path.is_symlink():
        raise ExportError(f"refusing to export to a symbolic link: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    export_model = build_export_model(model)
    args = _ordered_args(export_model, example_args, example_kwargs or {})
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
        ordered = _ordered_args(export_model, check_args, check_kwargs)
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
            with warnings.catch_warnings(), _quiet_failed_attempt():
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


ROUNDING_JITTER = 1e-5  # relative: float32 accumulation order and int32 bias rounding move values this much
NOISE_FACTOR = 2.0  # the gate allows twice the change that float rounding alone causes


def rounding_noise(export_model: nn.Module, args: tuple[Any, ...], seeds: int = 3) -> list[float]:
    """Per output, the largest change of the export model's output when every activation quantizer's
    input moves by float32 rounding noise (ROUNDING_JITTER, relative).

    Two correct INT8 implementations round differently (accumulation order, int32 bias); a value that
    flips by one quantization step in an early layer can move a deep net's output far: a random-init
    Wide ResNet-50 differs from itself by 18% between onnxruntime's optimization levels. The export
    gate widens to NOISE_FACTOR times this measured amount, so it rejects wrong graphs, not rounding.
    """
    qdqs = [m for m in export_model.modules() if isinstance(m, ActivationQDQ)]
    cpu_args = tuple(a.detach().cpu() if isinstance(a, torch.Tensor) else a for a in args)
    with torch.no_grad():
        clean = flatten_tensors(export_model(*cpu_args))
        worst = [0.0] * len(clean)
        if not qdqs:
            return worst
        try:
            with torch.random.fork_rng(devices=[]):
                for seed in range(seeds):
                    torch.manual_seed(seed)
                    for m in qdqs:
                        m.jitter = ROUNDING_JITTER
                    noisy = flatten_tensors(export_model(*cpu_args))
                    for i, (c, n) in enumerate(zip(clean, noisy, strict=True)):
                        if c.numel() and c.is_floating_point():
                            worst[i] = max(worst[i], float((c - n).abs().max()))
        finally:
            for m in qdqs:
                m.jitter = 0.0
    return worst


def parity_bound(expected: np.ndarray, rtol: float, noise: float = 0.0) -> float:
    """The largest difference the export gate allows on one output: `rtol` of its magnitude (one
    quantization step may move on float rounding), or NOISE_FACTOR times the model's measured
    rounding noise when that is larger."""
    if not expected.size:
        return 0.0
    return max(rtol * float(np.max(np.abs(expected))) + 1e-4, NOISE_FACTOR * noise)


def verify_onnx(
    model: nn.Module,
    path: Path,
    args: tuple[Any, ...],
    input_names: list[str],
    rtol: float,
    noise: Sequence[float] | None = None,
) -> float:
    """Run the file in onnxruntime and compare with `model` in eval mode; returns the max difference.
    `noise` (per output, from `rounding_noise`) widens the bound for models that rounding moves far."""
    import onnxruntime as ort

    reference = copy.deepcopy(model).cpu().eval()
    cpu_args = tuple(a.detach().cpu() if isinstance(a, torch.Tensor) else a for a in args)
    with torch.no_grad():
        expected = [t.numpy() for t in flatten_tensors(reference(*cpu_args))]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {name: a.numpy() for name, a in zip(input_names, cpu_args, strict=True) if isinstance(a, torch.Tensor)}
    actual = session.run(None, feeds)
    worst = 0.0
    for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
        diff = float(np.max(np.abs(e - a))) if e.size else 0.0
        magnitude = float(np.max(np.abs(e))) if e.size else 0.0
        out_noise = noise[i] if noise is not None and i < len(noise) else 0.0
        bound = parity_bound(e, rtol, out_noise)
        worst = max(worst, diff)
        noise_note = f"; float rounding alone moves it by {out_noise:.6g}" if out_noise else ""
        if diff > bound or e.shape != a.shape:
            raise ExportError(
                f"onnxruntime output {i} differs from the torch model: largest difference {diff:.6g} "
                f"(allowed {bound:.6g}; output magnitude {magnitude:.6g}{noise_note}); file: {path}"
                + _full_range_hint(model)
            )
        if e.size and bound > rtol * magnitude + 1e-4:
            logger.warning(
                "output %d of %s: float rounding alone moves this INT8 model's output by %.3g (%.1f%% of its "
                "magnitude %.3g; typical of deep nets with random or untrained weights), so the parity check "
                "allows %.3g; onnxruntime differs by %.3g",
                i, path, out_noise, 100 * out_noise / max(magnitude, 1e-12), magnitude, bound, diff,
            )  # fmt: skip
    return worst


def _full_range_hint(model: nn.Module) -> str:
    full = [
        m
        for m in model.modules()
        if isinstance(m, FakeQuantizer) and m.spec.is_weights and m.spec.num_bits == 8 and not m.spec.half_range
    ]
    if not full:
        return ""
    return (
        f". {len(full)} weight quantizers use the full 8-bit range (overflow_fix is not 'enable'): "
        "onnxruntime's uint8 x int8 kernels saturate on CPUs without VNNI, so the file computes "
        "something else there; keep overflow_fix 'enable' for CPU targets"
    )
