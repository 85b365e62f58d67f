"""HAWQ precision initialization (NNCF's `"precision": {"type": "hawq"}`): weight bits per layer from
Hessian-trace sensitivity under a compression-ratio constraint.

Steps: estimate each weight's average Hessian trace on the registered data and loss (hessian.py);
measure ||W - Q_b(W)||^2 per allowed bit width with the layer's own quantizer spec and range
init; count each layer's MACs on the example input; pick the bits (assignment.py, which defines
the compression ratio exactly); write them into the quantizer setup before the quantizers exist.
Only weights change bits: activation quantizers keep their configured bits (8 by default).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from squeezer.compression.build import BuildContext
from squeezer.compression.config.models import PrecisionInit, RangeInit
from squeezer.compression.graph.surgery import evaluating, original_weight
from squeezer.compression.init_args import QuantizationPrecisionInitArgs, to_device, wrap_dataloader_for_init
from squeezer.compression.quantization.placement import ActivationPoint, QuantizerSetup, WeightPoint
from squeezer.compression.quantization.precision.assignment import (
    LayerCandidate,
    assign_bits,
    compression_ratio,
)
from squeezer.compression.quantization.precision.hessian import Batch, average_hessian_traces
from squeezer.compression.quantization.quantizer import FakeQuantizer, QuantizerSpec, with_bits
from squeezer.compression.quantization.range_init import init_ranges
from squeezer.errors import CompressionError, ConfigError

logger = logging.getLogger(__name__)

PRECISION_PATH = "$.compression.initializer.precision"
DEFAULT_BITS = (4, 8)
DEFAULT_COMPRESSION_RATIO = 1.5  # NNCF's default
DEFAULT_ITER_NUMBER = 200  # Hutchinson probes per batch at most, when `iter_number` is not set
DUMP_NAME = "hawq_precision_init.json"
_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def run_hawq(
    ctx: BuildContext, precision: PrecisionInit, setup: QuantizerSetup, range_configs: dict[str, RangeInit]
) -> dict[str, Any]:
    """Choose each weight quantizer's bits, write them into `setup`; returns the report (JSON-ready)."""
    allowed = sorted(set(precision.bits or DEFAULT_BITS))
    ratio = precision.compression_ratio if precision.compression_ratio is not None else DEFAULT_COMPRESSION_RATIO
    pinned = _pinned_bits(setup, precision.bitwidth_per_scope)
    layers = {wp.id: (ctx.model.get_submodule(wp.module), wp.tensor) for wp in setup.weights}
    if precision.traces_per_layer_path:
        traces = load_traces(Path(precision.traces_per_layer_path), list(layers))
        probes: list[int] = []
    else:
        estimate = _estimate_traces(ctx, precision, layers)
        traces, probes = estimate.traces, estimate.probes_per_batch
    macs = macs_per_sample(ctx.model, layers, ctx.example_inputs)
    candidates = []
    for wp in setup.weights:
        module, tensor = layers[wp.id]
        weight = cast(torch.Tensor, getattr(module, tensor)).detach()  # what the quantizer will see
        options = [pinned[wp.id]] if wp.id in pinned else allowed
        noise = {b: quantization_noise(weight, with_bits(wp.spec, b), range_configs[wp.id]) for b in options}
        candidates.append(LayerCandidate(wp.id, macs[wp.id], traces[wp.id], noise))
    try:
        chosen = assign_bits(candidates, ratio)
    except ValueError as exc:
        raise ConfigError(
            f"{exc}; lower compression_ratio or allow fewer bits in `bits`", path=f"{PRECISION_PATH}.compression_ratio"
        ) from exc
    for wp in setup.weights:
        wp.spec = with_bits(wp.spec, chosen[wp.id])
    report = _report(setup.weights, candidates, chosen, allowed, ratio, probes)
    _log(report)
    if precision.dump_init_precision_data:
        path = Path(ctx.cfg.log_dir) / DUMP_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
        logger.info("HAWQ sensitivities and bit widths written to %s", path)
    return report


def _pinned_bits(setup: QuantizerSetup, pairs: list[list[int | str]]) -> dict[str, int]:
    """Weights that `bitwidth_per_scope` fixes (the first quantizer id containing the string, as in
    manual mode); the search keeps them at those bits and counts them in the ratio."""
    points: list[WeightPoint | ActivationPoint] = [*setup.weights, *setup.activations]
    pinned: dict[str, int] = {}
    for i, (bits, scope) in enumerate(pairs):
        point = next((p for p in points if str(scope) in p.id), None)
        if point is None:
            raise ConfigError(f"no quantizer id contains {scope!r}", path=f"{PRECISION_PATH}.bitwidth_per_scope[{i}]")
        if isinstance(point, WeightPoint):
            pinned[point.id] = int(bits)
    return pinned


def _estimate_traces(ctx: BuildContext, precision: PrecisionInit, layers: dict[str, tuple[nn.Module, str]]) -> Any:
    if not ctx.config.has_extra_struct(QuantizationPrecisionInitArgs):
        raise CompressionError(
            "HAWQ precision initialization needs data and a loss: call "
            "register_default_init_args(config, train_loader, criterion=...) first (criterion_fn optional), "
            "or give initializer.precision.traces_per_layer_path"
        )
    args = ctx.config.get_extra_struct(QuantizationPrecisionInitArgs)
    loader = wrap_dataloader_for_init(args.data_loader)
    device = args.device or ctx.device()

    def batches() -> Iterator[Batch]:
        seen = 0
        for item in loader:
            if seen >= precision.num_data_points:
                return
            inputs, kwargs = loader.get_inputs(item)
            target = loader.get_target(item)
            seen += _count(target, inputs, loader.batch_size)
            yield to_device(tuple(inputs), device), to_device(dict(kwargs), device), to_device(target, device)

    def loss(outputs: Any, target: Any) -> torch.Tensor:
        return args.criterion_fn(outputs, target, args.criterion)

    weights = {qid: original_weight(m, tensor) for qid, (m, tensor) in layers.items()}
    iters = precision.iter_number if precision.iter_number is not None else DEFAULT_ITER_NUMBER
    return average_hessian_traces(ctx.model, weights, batches(), loss, iters, precision.tolerance)


def _count(target: Any, inputs: Any, batch_size: int | None) -> int:
    for t in (target, *inputs):
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return int(t.shape[0])
    return batch_size or 1


def load_traces(path: Path, ids: list[str]) -> dict[str, float]:
    """Traces from a JSON file: this module's own dump (`layers`) or a plain {quantizer id: trace}.
    NNCF's torch.save files are pickles, which Squeezer never loads."""
    where = f"{PRECISION_PATH}.traces_per_layer_path"
    if path.suffix != ".json":
        raise ConfigError(f"{path} is not a .json file; Squeezer reads traces only from JSON", path=where)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read traces from {path}: {exc}", path=where) from exc
    if isinstance(data, dict) and isinstance(data.get("layers"), list):
        data = {layer["id"]: layer["hessian_trace"] for layer in data["layers"]}
    missing = [i for i in ids if not isinstance(data, dict) or not isinstance(data.get(i), (int, float))]
    if missing:
        raise ConfigError(f"{path} has no trace for {len(missing)} quantizers, e.g. {missing[0]!r}", path=where)
    return {i: float(data[i]) for i in ids}


def macs_per_sample(
    model: nn.Module, layers: dict[str, tuple[nn.Module, str]], example: tuple[tuple[Any, ...], dict[str, Any]]
) -> dict[str, int]:
    """Multiply-accumulates of one sample through each weight (quantizer id -> (module, tensor name)): weight
    count x positions it is applied at (a conv's output pixels, a transposed conv's input pixels, a linear
    layer's or an attention's in-projection's tokens). A layer the example forward does not call as a module
    (nn.MultiheadAttention's out_proj) counts its weights once."""
    positions: dict[nn.Module, int] = {m: 0 for m, _ in layers.values()}
    tensor_of = {m: tensor for m, tensor in layers.values()}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        out = output if isinstance(output, torch.Tensor) else next(iter(_tensors(output)), None)
        if out is None or out.dim() == 0:
            return
        if isinstance(module, _CONV_TRANSPOSE) and isinstance(inputs[0], torch.Tensor):
            positions[module] += int(inputs[0][0, 0].numel())
        elif original_weight(module, tensor_of[module]).dim() > 2:
            positions[module] += int(out[0, 0].numel()) if out.dim() > 2 else 1
        else:
            positions[module] += out.numel() // (out.shape[0] * out.shape[-1]) if out.dim() >= 2 else 1

    handles = [m.register_forward_hook(hook) for m in positions]
    args, kwargs = example
    try:
        with evaluating(model), torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return {qid: original_weight(m, tensor).numel() * max(positions[m], 1) for qid, (m, tensor) in layers.items()}


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, (list, tuple)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return []


def quantization_noise(weight: torch.Tensor, spec: QuantizerSpec, range_config: RangeInit) -> float:
    """||W - Q(W)||^2 with a quantizer of `spec` whose range is initialized as the real one will be."""
    quantizer = FakeQuantizer(spec).to(weight.device)
    init_ranges(nn.Identity(), {"w": (quantizer, weight)}, {}, {"w": range_config}, None, weight.device)
    with torch.no_grad():
        return float(((quantizer(weight) - weight) ** 2).sum())


def _report(
    points: list[WeightPoint],
    candidates: list[LayerCandidate],
    chosen: dict[str, int],
    allowed: list[int],
    ratio: float,
    probes: list[int],
) -> dict[str, Any]:
    by_id = {c.id: c for c in candidates}
    return {
        "type": "hawq",
        "bits": allowed,
        "target_compression_ratio": ratio,
        "compression_ratio": compression_ratio(candidates, chosen),
        "compression_ratio_definition": "sum(MACs * 8) / sum(MACs * weight bits) over weight-quantized layers",
        "hutchinson_probes_per_batch": probes,
        "layers": [
            {
                "id": wp.id,
                "module": wp.module,
                "tensor": wp.tensor,
                "bits": chosen[wp.id],
                "hessian_trace": by_id[wp.id].trace,
                "macs": by_id[wp.id].macs,
                "noise": {str(b): n for b, n in sorted(by_id[wp.id].noise.items())},
                "sensitivity": {str(b): by_id[wp.id].loss_increase(b) for b in sorted(by_id[wp.id].noise)},
            }
            for wp in points
        ],
    }


def _log(report: dict[str, Any]) -> None:
    counts = {b: sum(layer["bits"] == b for layer in report["layers"]) for b in report["bits"]}
    logger.info(
        "HAWQ: compression ratio %.3f (target %.3f); weight quantizers per bit width: %s",
        report["compression_ratio"],
        report["target_compression_ratio"],
        ", ".join(f"{b} bits: {n}" for b, n in counts.items()),
    )
    for layer in sorted(report["layers"], key=lambda x: -x["hessian_trace"]):
        logger.info("  %2d bits  trace %.4g  %s", layer["bits"], layer["hessian_trace"], layer["id"])
