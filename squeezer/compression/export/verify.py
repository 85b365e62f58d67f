"""The export gate: a file's outputs against the torch model's, within `parity_bound` (a tolerance
widened by the model's own measured float-rounding noise, `rounding_noise`), in onnxruntime
(`verify_onnx`; the OpenVINO IR's check uses the same bound)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezer.compression.export.qdq_modules import ActivationQDQ
from squeezer.compression.init_args import flatten_tensors
from squeezer.compression.quantization.quantizer import FakeQuantizer
from squeezer.errors import ExportError

logger = logging.getLogger(__name__)
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
                + full_range_hint(model)
            )
        if e.size and bound > rtol * magnitude + 1e-4:
            logger.warning(
                "output %d of %s: float rounding alone moves this INT8 model's output by %.3g (%.1f%% of its "
                "magnitude %.3g; typical of deep nets with random or untrained weights), so the parity check "
                "allows %.3g; onnxruntime differs by %.3g",
                i, path, out_noise, 100 * out_noise / max(magnitude, 1e-12), magnitude, bound, diff,
            )  # fmt: skip
    return worst


def full_range_hint(model: nn.Module) -> str:
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
