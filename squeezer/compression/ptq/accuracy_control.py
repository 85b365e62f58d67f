"""`quantize_with_accuracy_control`: post-training quantization that returns layers to FP32 until the
metric drop is within `max_drop` (NNCF offers this for OpenVINO and ONNX models; here on PyTorch).

1. Quantize as `quantize` does; validate the FP32 and the INT8 model with the user's `validation_fn`.
2. Group the quantizers by the layer they serve (its weight quantizer and the quantizers of its inputs;
   quantizers that serve no weighted layer form groups of their own).
3. Rank the groups without validating: switch each one off alone and measure how much closer the
   outputs come to FP32 on a few validation samples (one forward pass each, no metric needed).
4. Find the fewest top-ranked groups to leave in FP32 by doubling then bisecting the count: about
   2 log2(n) validations where NNCF's loop reverts groups one validation at a time.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from squeezer.compression.api import controller_of
from squeezer.compression.init_args import flatten_tensors
from squeezer.compression.ptq.bias_correction import bias_of
from squeezer.compression.ptq.bias_correction import fast_bias_correction as correct_biases
from squeezer.compression.ptq.dataset import Dataset, Inputs, collect_batches
from squeezer.compression.ptq.post_training import quantize
from squeezer.compression.ptq.ranges import quantizers_enabled
from squeezer.compression.ptq.types import (
    AdvancedAccuracyRestorerParameters,
    AdvancedQuantizationParameters,
    DropType,
    IgnoredScope,
    ModelType,
    QuantizationPreset,
    TargetDevice,
)
from squeezer.compression.quantization.algorithm import QuantizationController
from squeezer.errors import CompressionError

logger = logging.getLogger(__name__)


@dataclass
class QuantizerGroup:
    """Quantizers that go back to FP32 together: one layer's weight and input quantizers."""

    name: str
    quantizer_ids: list[str]
    score: float = 0.0  # how much switching this group off alone cuts the output error (fraction of it)


def quantizer_groups(ctrl: QuantizationController) -> list[QuantizerGroup]:
    """One group per quantized layer (module path) plus one per activation quantizer serving no layer."""
    traced = ctrl.context.traced if ctrl.context is not None else None
    reads: dict[str, list[str]] = {}  # module path -> activation quantizer ids feeding it
    served: set[str] = set()
    for point in ctrl.setup.activations:
        for consumer in point.consumers:
            if traced is None:
                continue
            node = traced.node_by_name(consumer)
            if node.op == "call_module":
                reads.setdefault(str(node.target), []).append(point.id)
    groups: dict[str, QuantizerGroup] = {}
    for wp in ctrl.setup.weights:
        group = groups.setdefault(wp.module, QuantizerGroup(wp.module, []))
        group.quantizer_ids.append(wp.id)
        for pid in reads.get(wp.module, []):
            if pid not in group.quantizer_ids:
                group.quantizer_ids.append(pid)
                served.add(pid)
    for point in ctrl.setup.activations:
        if point.id not in served:
            groups[point.id] = QuantizerGroup(point.id, [point.id])
    return list(groups.values())


@contextlib.contextmanager
def in_fp32(ctrl: QuantizationController, groups: list[QuantizerGroup]) -> Iterator[None]:
    """The groups' quantizers off and their layers' bias corrections taken back (an exact FP32 layer)."""
    quantizers = ctrl.all_quantizations
    corrections = ctrl.ptq_report.bias_corrections
    layers = [g.name for g in groups if g.name in corrections]
    with torch.no_grad():
        for name in layers:
            bias_of(ctrl.model, name).sub_(corrections[name])
    try:
        with quantizers_enabled([quantizers[q] for g in groups for q in g.quantizer_ids], False):
            yield
    finally:
        with torch.no_grad():
            for name in layers:
                bias_of(ctrl.model, name).add_(corrections[name])


def _outputs(model: nn.Module, batches: list[Inputs]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t.detach().float() for args, kwargs in batches for t in flatten_tensors(model(*args, **kwargs))]


def _distance(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    num = sum(float((o - r).pow(2).sum()) for o, r in zip(outputs, reference, strict=True))
    den = sum(float(r.pow(2).sum()) for r in reference)
    return num / max(den, 1e-12)


def configure(ctrl: QuantizationController, fp32_groups: list[QuantizerGroup]) -> None:
    """Quantizers of `fp32_groups` off, every other on, and bias correction redone for that mix: a
    correction measured while an upstream layer was quantized would be wrong once it runs in FP32."""
    report = ctrl.ptq_report
    with torch.no_grad():
        for name, delta in report.bias_corrections.items():
            bias_of(ctrl.model, name).sub_(delta)
    off = {q for g in fp32_groups for q in g.quantizer_ids}
    for qid, q in ctrl.all_quantizations.items():
        q.enabled.fill_(int(qid not in off))
    if report.bias_batches:
        skipped = {g.name for g in fp32_groups}
        layers = {
            wp.module: ctrl.model.get_submodule(wp.module)
            for wp in ctrl.setup.weights
            if wp.tensor == "weight" and wp.module not in skipped
        }
        report.bias_corrections = correct_biases(
            ctrl.model, layers, report.bias_batches, list(ctrl.all_quantizations.values())
        )
    else:
        report.bias_corrections = {}


def rank_groups(
    ctrl: QuantizationController, groups: list[QuantizerGroup], batches: list[Inputs], reference: list[torch.Tensor]
) -> list[QuantizerGroup]:
    """Groups sorted by how much leaving each alone in FP32 brings the outputs toward `reference`."""
    base = _distance(_outputs(ctrl.model, batches), reference)
    for group in groups:
        with in_fp32(ctrl, [group]):
            group.score = (base - _distance(_outputs(ctrl.model, batches), reference)) / max(base, 1e-12)
    return sorted(groups, key=lambda g: g.score, reverse=True)


class _Validator:
    """Calls the user's validation_fn, counts the calls and turns its failures into clear errors."""

    def __init__(self, fn: Callable[[nn.Module, Iterable[Any]], Any], dataset: Dataset) -> None:
        self.fn = fn
        self.dataset = dataset
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, model: nn.Module, what: str) -> float:
        started = time.perf_counter()
        self.calls += 1
        try:
            value = self.fn(model, self.dataset.get_data())
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise CompressionError(f"validation_fn raised on the {what} model: {message}") from exc
        finally:
            self.seconds += time.perf_counter() - started
        if isinstance(value, tuple):  # NNCF allows (metric, per-sample values)
            value = value[0]
        try:
            metric = float(value)
        except (TypeError, ValueError):
            raise CompressionError(
                f"validation_fn must return a number (or a (number, per-sample values) tuple); it returned "
                f"{type(value).__name__} for the {what} model"
            ) from None
        if not math.isfinite(metric):
            raise CompressionError(f"validation_fn returned {metric} for the {what} model; a finite metric is needed")
        return metric


def _drop(reference: float, metric: float, drop_type: DropType) -> float:
    if DropType(drop_type) is DropType.RELATIVE:
        return (reference - metric) / abs(reference) if reference else reference - metric
    return reference - metric


def _search(count_ok: Callable[[int], bool], n: int, budget: int) -> tuple[int | None, int]:
    """The smallest k in 1..n with count_ok(k), by doubling then bisection; (k or None, calls made)."""
    calls = 0
    low, high = 0, None  # count_ok(low) is known False (k=0 is the plain INT8 model)
    k = 1
    while high is None and calls < budget:
        k = min(k, n)
        calls += 1
        if count_ok(k):
            high = k
        elif k == n:
            return None, calls
        else:
            low, k = k, k * 2
    if high is None:
        return None, calls
    while high - low > 1 and calls < budget:
        mid = (low + high) // 2
        calls += 1
        if count_ok(mid):
            high = mid
        else:
            low = mid
    return high, calls


def quantize_with_accuracy_control(
    model: nn.Module,
    calibration_dataset: Dataset,
    validation_dataset: Dataset,
    validation_fn: Callable[[nn.Module, Iterable[Any]], Any],
    max_drop: float = 0.01,
    drop_type: DropType = DropType.ABSOLUTE,
    preset: QuantizationPreset | None = None,
    target_device: TargetDevice = TargetDevice.ANY,
    subset_size: int = 300,
    fast_bias_correction: bool = True,
    model_type: ModelType | None = None,
    ignored_scope: IgnoredScope | None = None,
    advanced_quantization_parameters: AdvancedQuantizationParameters | None = None,
    advanced_accuracy_restorer_parameters: AdvancedAccuracyRestorerParameters | None = None,
) -> nn.Module:
    """`quantize`, then the fewest layers back in FP32 that bring the metric within `max_drop` of FP32's.

    `validation_fn(model, validation_dataset.get_data())` returns the metric (higher is better). Which
    layers went back and why is logged and kept in `controller_of(result).ptq_report.accuracy_control`.
    """
    if max_drop < 0:
        raise CompressionError(f"max_drop must be at least 0, got {max_drop}")
    if not isinstance(validation_dataset, Dataset):
        raise CompressionError("validation_dataset must be a squeezer.compression.Dataset (nncf.Dataset)")
    restorer = advanced_accuracy_restorer_parameters or AdvancedAccuracyRestorerParameters()
    started = time.perf_counter()
    validate = _Validator(validation_fn, validation_dataset)
    reference_model = copy.deepcopy(model).eval()
    fp32_metric = validate(reference_model, "FP32")
    qmodel = quantize(
        model,
        calibration_dataset,
        preset=preset,
        target_device=target_device,
        subset_size=subset_size,
        fast_bias_correction=fast_bias_correction,
        model_type=model_type,
        ignored_scope=ignored_scope,
        advanced_parameters=advanced_quantization_parameters,
    )
    ctrl = controller_of(qmodel)
    assert isinstance(ctrl, QuantizationController)
    int8_metric = validate(qmodel, "INT8")
    report: dict[str, Any] = {
        "fp32_metric": fp32_metric,
        "int8_metric": int8_metric,
        "max_drop": max_drop,
        "drop_type": DropType(drop_type).value,
        "fp32_groups": [],
    }
    result_metric = int8_metric
    if _drop(fp32_metric, int8_metric, drop_type) > max_drop:

        def within(metric: float) -> bool:
            return _drop(fp32_metric, metric, drop_type) <= max_drop

        fp32_groups, ranked, restored_metric = _restore_fp32_groups(
            ctrl, qmodel, model, reference_model, validation_dataset, restorer, validate, within, max_drop
        )
        result_metric = restored_metric if restored_metric is not None else result_metric
        report["fp32_groups"] = [
            {**asdict(g), "rank": i + 1, "reason": f"leaving it in FP32 alone cuts the output error by {g.score:.0%}"}
            for i, g in enumerate(fp32_groups)
        ]
        report["ranked_groups"] = ranked
    report.update(
        metric=result_metric,
        drop=_drop(fp32_metric, result_metric, drop_type),
        validations=validate.calls,
        validation_seconds=validate.seconds,
        seconds=time.perf_counter() - started,
    )
    ctrl.ptq_report.accuracy_control = report
    _log_report(report)
    return qmodel


def _restore_fp32_groups(
    ctrl: QuantizationController,
    qmodel: nn.Module,
    model: nn.Module,
    reference_model: nn.Module,
    validation_dataset: Dataset,
    restorer: AdvancedAccuracyRestorerParameters,
    validate: _Validator,
    within: Callable[[float], bool],
    max_drop: float,
) -> tuple[list[QuantizerGroup], int, float | None]:
    """Steps 3 and 4: rank the quantizer groups, find the fewest top-ranked ones whose return to FP32
    meets `within(metric)`, and leave those in FP32 (disabled, so fine-tuning keeps them so too).
    Returns those groups, how many were ranked, and the metric validated with them (None if never)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ranking_batches = collect_batches(
        validation_dataset, restorer.ranking_subset_size, reference_model, device, "validation_dataset"
    )
    groups = rank_groups(ctrl, quantizer_groups(ctrl), ranking_batches, _outputs(reference_model, ranking_batches))
    metrics: dict[int, float] = {}

    def meets(k: int) -> bool:
        configure(ctrl, groups[:k])
        metrics[k] = validate(qmodel, f"INT8 with {k} layer groups in FP32")
        return within(metrics[k])

    k, _ = _search(meets, len(groups), restorer.max_num_iterations)
    if k is None:
        k = len(groups)
        logger.warning(
            "accuracy control: max_drop %s not met within %d validations; every quantizer group stays FP32",
            max_drop,
            restorer.max_num_iterations,
        )
    configure(ctrl, groups[:k])
    quantizers = ctrl.all_quantizations
    for group in groups[:k]:
        for q in group.quantizer_ids:
            quantizers[q].set_enabled(False)  # also frozen for fine-tuning
    return groups[:k], len(groups), metrics.get(k)


def _log_report(report: dict[str, Any]) -> None:
    logger.info(
        "accuracy control: FP32 %.4f, INT8 %.4f, result %.4f with %d layer groups in FP32 (%d validations)",
        report["fp32_metric"],
        report["int8_metric"],
        report["metric"],
        len(report["fp32_groups"]),
        report["validations"],
    )
    for entry in report["fp32_groups"]:
        logger.info("  FP32: %s (rank %d): %s", entry["name"], entry["rank"], entry["reason"])
