"""`quantize`: post-training INT8 quantization of a PyTorch model, NNCF 3.x's signature.

The steps, each measured on real models (docs/library.md, "Post-training quantization"):
1. place quantizers as the training-time API does (same placement rules, `target_runtime` included);
2. cross-layer equalization of conv/linear pairs with only ReLU or max pooling between them
   (`equalization.py`); for transformers, SmoothQuant with a per-group alpha (`smooth_quant.py`);
3. weights: per-channel min-max; activations: the MSE-optimal range (`ranges.py`);
4. fast bias correction (`bias_correction.py`), except for transformers.
For transformers, the statistics of steps 2-3 leave out padding tokens' rows (`tokens.py`).
The result is the same kind of model `create_compressed_model` returns: it exports through the same
verified ONNX / OpenVINO path (`export_model` on its controller, `controller_of(model)`), and it can
be fine-tuned as it is (quantization-aware training starting from the post-training ranges).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from squeezer.compression.api import controller_of, create_compressed_model
from squeezer.compression.config.models import RangeInit
from squeezer.compression.config.nncf_config import NNCFConfig
from squeezer.compression.controller import CompressionController
from squeezer.compression.graph.surgery import evaluating, original_weight
from squeezer.compression.init_args import iterate_batches, register_default_init_args, wrap_dataloader_for_init
from squeezer.compression.ptq.bias_correction import FP32Means, apply_correction, recording_fp32_means
from squeezer.compression.ptq.dataset import BatchLoader, Dataset, Inputs, batch_size_of, collect_batches
from squeezer.compression.ptq.equalization import equalize
from squeezer.compression.ptq.gptq import gptq_round
from squeezer.compression.ptq.pooling import channels_last_max_pooling
from squeezer.compression.ptq.ranges import ActivationStats, quantizers_enabled, set_activation_range
from squeezer.compression.ptq.smooth_quant import smooth_quant, smoothed_groups
from squeezer.compression.ptq.tokens import token_mask
from squeezer.compression.ptq.types import (
    AdvancedQuantizationParameters,
    IgnoredScope,
    ModelType,
    QuantizationMode,
    QuantizationPreset,
    RangeEstimator,
    TargetDevice,
)
from squeezer.compression.quantization.algorithm import QuantizationController
from squeezer.compression.quantization.range_init import init_ranges
from squeezer.errors import CompressionError

logger = logging.getLogger(__name__)


@dataclass
class PTQReport:
    """What `quantize` did, kept on the controller (`controller_of(model).ptq_report`)."""

    samples: int = 0
    equalized: list[str] = field(default_factory=list)  # "first->second" layer pairs
    smooth_quant_alphas: dict[str, float] = field(default_factory=dict)
    clip_ratios: dict[str, float] = field(default_factory=dict)  # activation quantizer id -> range shrink
    gptq_layers: list[str] = field(default_factory=list)  # Linears whose weights GPTQ rounded
    bias_corrections: dict[str, torch.Tensor] = field(default_factory=dict)  # module path -> added to bias
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)  # where the time went
    bias_batches: list[Inputs] = field(default_factory=list, repr=False)  # what bias correction ran on
    accuracy_control: dict[str, Any] | None = None


def _value(x: Any) -> Any:
    return x.value if hasattr(x, "value") else x


def _config(
    preset: QuantizationPreset | None,
    target_device: TargetDevice,
    model_type: ModelType | None,
    ignored_scope: IgnoredScope | None,
    target_runtime: str | None,
) -> dict[str, Any]:
    transformer = model_type is not None and _value(model_type) == ModelType.TRANSFORMER.value
    if preset is None:
        preset = QuantizationPreset.MIXED if transformer else QuantizationPreset.PERFORMANCE
    if transformer and target_runtime is None:
        target_runtime = "onnxruntime"  # residual and embedding sums stay FP32 (their outliers are +-400)
    compression: dict[str, Any] = {
        "algorithm": "quantization",
        "preset": _value(preset),
        # NNCF 3.x's PTQ default: 7-bit weights (the VNNI-less overflow fix) on the first conv only
        "overflow_fix": "first_layer_only",
        # ranges are set below, from statistics this module collects; no BatchNorm adaptation in PTQ
        "initializer": {"range": {"num_init_samples": 0}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 0}},
        # NNCF 3.x's ignored pattern for CNNs: squeeze-and-excitation gates stay FP32. Not for onnxruntime,
        # whose QLinearConv / QLinearSigmoid / QLinearMul run the gate in INT8: MobileNetV3-large ran 0.90x
        # FP32 there with the gate left FP32 against quantize_static's 1.15x (0.98x vs 0.96x quantized)
        "ignored_patterns": [] if transformer or target_runtime == "onnxruntime" else ["se_block"],
    }
    config: dict[str, Any] = {"target_device": _value(target_device), "compression": compression}
    if target_runtime is not None:
        config["target_runtime"] = target_runtime
    if ignored_scope is not None:
        scopes = ignored_scope.to_scopes()
        if scopes:
            compression["ignored_scopes"] = scopes  # the section's scopes are checked against the model
            compression["validate_scopes"] = ignored_scope.validate
    return config


def _controller(model: nn.Module) -> QuantizationController:
    ctrl = controller_of(model)
    if not isinstance(ctrl, QuantizationController):
        raise CompressionError("the model was not produced by squeezer.compression.quantize")
    return ctrl


def _init_weight_ranges(ctrl: QuantizationController) -> None:
    """Per-channel min-max weight ranges, from the (possibly equalized or smoothed) weights as they are now."""
    weights = {
        wp.id: (ctrl.weight_quantizers[wp.id], original_weight(ctrl.model.get_submodule(wp.module), wp.tensor))
        for wp in ctrl.setup.weights
    }
    minmax = RangeInit(type="min_max")
    init_ranges(ctrl.model, weights, {}, dict.fromkeys(weights, minmax), None, torch.device("cpu"))


def _init_activation_ranges(
    ctrl: QuantizationController,
    batches: list[Inputs],
    estimator: RangeEstimator,
    means: FP32Means | None = None,
    mean_batches: int = 0,
    clip_ratios: dict[str, float] | None = None,
    tokens: bool = False,
) -> None:
    """Activation statistics in one FP32 pass (which also records the first `mean_batches` batches'
    layer means for bias correction into `means`), then each quantizer's range. `tokens`: statistics of
    the real tokens only (`tokens.py`)."""
    keep = estimator is not RangeEstimator.MINMAX
    stats = {qid: ActivationStats(q, keep) for qid, q in ctrl.non_weight_quantizers.items()}

    def record(s: ActivationStats):
        return lambda _m, args: s.update(args[0])

    handles = [s.quantizer.register_forward_pre_hook(record(s)) for s in stats.values()]
    try:
        with quantizers_enabled(list(ctrl.all_quantizations.values()), False), torch.no_grad():
            for index, (args, kwargs) in enumerate(batches):
                if means is not None:
                    means.active = index < mean_batches
                with token_mask(kwargs, tokens):
                    ctrl.model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    for qid, s in stats.items():
        if not s.seen:
            logger.warning("activation quantizer %s saw no calibration data; its range stays at the default", qid)
            continue
        set_activation_range(s, estimator, (clip_ratios or {}).get(qid, 1.0))


def calibrate(
    ctrl: QuantizationController,
    batches: list[Inputs],
    model_type: ModelType | None = None,
    fast_bias_correction: bool = True,
    advanced: AdvancedQuantizationParameters | None = None,
    phases: dict[str, float] | None = None,
    add_biases: bool = True,
) -> PTQReport:
    """The post-training steps on a model whose quantizers are placed: equalization, SmoothQuant (for
    transformers), ranges and bias correction. `quantize` calls it on a fresh model; the training-time
    path calls it to start quantization-aware training from post-training ranges (recipe init "ptq")."""
    with channels_last_max_pooling(ctrl.model):  # the same results, faster calibration passes on CPU
        return _calibrate(ctrl, batches, model_type, fast_bias_correction, advanced, phases, add_biases)


def _calibrate(
    ctrl: QuantizationController,
    batches: list[Inputs],
    model_type: ModelType | None,
    fast_bias_correction: bool,
    advanced: AdvancedQuantizationParameters | None,
    phases: dict[str, float] | None,
    add_biases: bool,
) -> PTQReport:
    advanced = advanced or AdvancedQuantizationParameters()
    phases = phases if phases is not None else {}
    qmodel = ctrl.model
    report = PTQReport(samples=sum(batch_size_of(b) for b in batches), phase_seconds=phases)
    transformer = model_type is not None and _value(model_type) == ModelType.TRANSFORMER.value
    weighted = {wp.module for wp in ctrl.setup.weights if wp.tensor == "weight"}
    gm = ctrl.context.gm if ctrl.context is not None and ctrl.context.traced is not None else None
    second_moments: dict[str, torch.Tensor] = {}
    if advanced.cross_layer_equalization and gm is not None:
        with _phase(phases, "equalization"):
            report.equalized = equalize(gm, weighted)
    alphas = advanced.smooth_quant_alphas
    if transformer and (alphas.matmul is None or alphas.matmul >= 0) and gm is not None:
        candidates = alphas.alpha_candidates if alphas.matmul is None else (alphas.matmul,)
        with _phase(phases, "smooth_quant"):
            chosen = smooth_quant(
                gm,
                ctrl.non_weight_quantizers,
                weighted,
                batches,
                list(ctrl.all_quantizations.values()),
                candidates,
                alphas.clip_ratios,
                second_moments if advanced.gptq else None,
                tokens=True,
            )
            report.smooth_quant_alphas = {pid: alpha for pid, (alpha, _) in chosen.items()}
            report.clip_ratios = {pid: ratio for pid, (_, ratio) in chosen.items() if ratio < 1.0}
    # not for transformers: measured on MiniLM at 128 tokens (statistics of real tokens), the per-channel
    # mean shifts it adds cost more than they restore: min embedding cosine 0.9952 -> 0.9970 and
    # 0.9969 -> 0.9974 on the two sentence sets without it (and its quantized pass is saved)
    correct = fast_bias_correction and not advanced.disable_bias_correction and not transformer
    layers = {wp.module: qmodel.get_submodule(wp.module) for wp in ctrl.setup.weights if wp.tensor == "weight"}
    subset = _subset(batches, advanced.bias_correction_subset_size) if correct else []
    # measured: MSE clipping helps ReLU networks (ResNet-18 error 0.092 -> 0.085 before bias correction);
    # on MiniLM's smoothed Linear inputs min-max keeps more (cosine 0.9942 vs 0.9936 at 64 tokens)
    default = RangeEstimator.MINMAX if transformer else RangeEstimator.MSE
    estimator = advanced.activations_range_estimator or default
    with _phase(phases, "ranges"), recording_fp32_means(layers if correct else {}) as means:
        _init_weight_ranges(ctrl)
        if second_moments:
            report.gptq_layers = _round_weights(ctrl, second_moments)
        _init_activation_ranges(ctrl, batches, estimator, means, len(subset), report.clip_ratios, transformer)
    if correct:
        with _phase(phases, "bias_correction"):
            report.bias_corrections = apply_correction(qmodel, layers, subset, means.close(), add_biases)
        report.bias_batches = subset
    ctrl.ptq_report = report
    return report


def quantize(
    model: nn.Module,
    calibration_dataset: Dataset,
    mode: QuantizationMode | None = None,
    preset: QuantizationPreset | None = None,
    target_device: TargetDevice = TargetDevice.ANY,
    subset_size: int = 300,
    fast_bias_correction: bool = True,
    model_type: ModelType | None = None,
    ignored_scope: IgnoredScope | None = None,
    advanced_parameters: AdvancedQuantizationParameters | None = None,
) -> nn.Module:
    """INT8 post-training quantization from `subset_size` calibration samples (no labels, no training).

    Returns a copy of `model` with quantizers; the caller's model is left untouched. Export it with
    `controller_of(q).export_model("m.onnx")` or fine-tune it like any compressed model.
    """
    started = time.perf_counter()
    phases: dict[str, float] = {}
    if mode is not None:
        raise CompressionError(f"mode={_value(mode)!r} is not supported; only INT8 quantization (mode=None) is")
    advanced = advanced_parameters or AdvancedQuantizationParameters()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with _phase(phases, "data"):
        batches = collect_batches(calibration_dataset, subset_size, model, device, "calibration_dataset")
    config = NNCFConfig.from_dict(_config(preset, target_device, model_type, ignored_scope, advanced.target_runtime))
    register_default_init_args(config, BatchLoader(batches))
    with _phase(phases, "placement"):
        _, qmodel = create_compressed_model(model, config, dump_graphs=False)
    ctrl = _controller(qmodel)
    if not ctrl.weight_quantizers and not ctrl.non_weight_quantizers:
        raise CompressionError(
            f"{type(model).__name__} has no layer to quantize (no Conv, Linear or matmul inputs outside the "
            f"ignored scope); the model would be returned unchanged"
        )
    qmodel.eval()
    report = calibrate(ctrl, batches, model_type, fast_bias_correction, advanced, phases)
    report.seconds = time.perf_counter() - started
    logger.info(
        "post-training quantization: %d samples, %d weight and %d activation quantizers, %.1f s",
        report.samples,
        len(ctrl.weight_quantizers),
        len(ctrl.non_weight_quantizers),
        report.seconds,
    )
    return qmodel


def _round_weights(ctrl: QuantizationController, second_moments: dict[str, torch.Tensor]) -> list[str]:
    """GPTQ rounding of the weights whose input second moments are known (the SmoothQuant groups)."""
    done = []
    for wp in ctrl.setup.weights:
        h = second_moments.get(wp.module)
        if h is None or wp.tensor != "weight":
            continue
        q = ctrl.weight_quantizers[wp.id]
        step, _, qmin, qmax = q.qparams()
        weight = original_weight(ctrl.model.get_submodule(wp.module), wp.tensor)
        if weight.dim() != 2 or step.numel() != weight.shape[0]:
            continue
        with torch.no_grad():
            weight.copy_(gptq_round(weight, step, qmin, qmax, h))
        done.append(wp.module)
    return done


@contextlib.contextmanager
def _phase(phases: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - started


def _subset(batches: list[Inputs], samples: int) -> list[Inputs]:
    out, seen = [], 0
    for b in batches:
        if seen >= samples:
            break
        out.append(b)
        seen += batch_size_of(b)
    return out


def calibrate_for_training(
    ctrl: CompressionController, loader: Any, device: torch.device, transformer: bool, samples: int = 300
) -> dict[str, int]:
    """The post-training steps on a model about to be trained (`create_compressed_model` with
    `"model_type": "transformer"`, or a job's recipe init "ptq"): calibration batches from the init
    loader, no equalization (it rescales FP32 weights that pruning masks may already read) and no new
    biases (a resumed model must have the same parameters). Returns the SmoothQuant groups to record."""
    quantization = next((c for c in [ctrl, *ctrl.child_ctrls] if isinstance(c, QuantizationController)), None)
    if quantization is None:
        return {}
    wrapped = wrap_dataloader_for_init(loader)
    batches = [inputs for inputs in iterate_batches(wrapped, samples, device)]
    with evaluating(quantization.model):
        calibrate(
            quantization,
            batches,
            ModelType.TRANSFORMER if transformer else None,
            advanced=AdvancedQuantizationParameters(cross_layer_equalization=False),
            add_biases=False,
        )
    gm = quantization.context.gm if quantization.context is not None and quantization.context.traced else None
    return smoothed_groups(gm) if gm is not None else {}
