"""A job without training: post-training INT8 quantization (`recipe.mode == "ptq"`).

Calibration samples come from `train_data`'s x (labels are not read); `val_data`, when given, measures
the FP32 and INT8 metric, and with `recipe.max_drop` drives accuracy control. The config contributes
what a post-training call takes: `target_device`, `target_runtime`, the quantization section's
`preset` and `ignored_scopes`. The outputs, their verification and the latency report are those of
any job (`outputs.py`, `runtime/compare.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import squeezer.compression as sq
from squeezer.compression.quantization.algorithm import QuantizationController
from squeezer.errors import ConfigError
from squeezer.recipe import Recipe, ptq_config_problem

logger = logging.getLogger(__name__)


def ptq_arguments(config: dict[str, Any]) -> dict[str, Any]:
    """quantize()'s keyword arguments from an NNCF config; ConfigError when it asks for more than PTQ does."""
    problem = ptq_config_problem(config)
    if problem is not None:
        raise ConfigError(problem, path="$.compression")
    sections = config.get("compression") or []
    sections = [sections] if isinstance(sections, dict) else sections
    section = sections[0] if sections else {}
    kwargs: dict[str, Any] = {"target_device": sq.TargetDevice(config.get("target_device", "ANY"))}
    if section.get("preset"):
        kwargs["preset"] = sq.QuantizationPreset(section["preset"])
    scopes = [*(config.get("ignored_scopes") or []), *(section.get("ignored_scopes") or [])]
    if scopes:
        prefix = "{re}"
        kwargs["ignored_scope"] = sq.IgnoredScope(
            names=[s for s in scopes if not s.startswith(prefix)],
            patterns=[s[len(prefix) :] for s in scopes if s.startswith(prefix)],
        )
    if config.get("target_runtime"):
        kwargs["advanced_parameters"] = sq.AdvancedQuantizationParameters(target_runtime=config["target_runtime"])
    return kwargs


def quantize_for_job(
    model: nn.Module,
    config: dict[str, Any],
    recipe: Recipe,
    x_calibration: torch.Tensor,
    device: torch.device,
    metric: Callable[[nn.Module, Iterable[Any]], float] | None,
    val_loader: DataLoader | None,
) -> nn.Module:
    """quantize (or quantize_with_accuracy_control when recipe.max_drop is set) with the job's inputs."""
    kwargs = ptq_arguments(config)
    calibration = sq.Dataset(
        DataLoader(TensorDataset(x_calibration), batch_size=recipe.batch_size), lambda item: item[0].to(device)
    )
    model_type = sq.ModelType.TRANSFORMER if recipe.model_type == "transformer" else None
    if recipe.max_drop is None:
        return sq.quantize(model, calibration, subset_size=recipe.subset_size, model_type=model_type, **kwargs)
    assert metric is not None and val_loader is not None  # the API refuses max_drop without val_data
    advanced = kwargs.pop("advanced_parameters", None)
    relative = recipe.drop_type == "relative"  # the recipe's relative drop is in percent, NNCF's a fraction
    return sq.quantize_with_accuracy_control(
        model,
        calibration,
        sq.Dataset(val_loader, lambda item: item[0].to(device)),
        metric,
        max_drop=recipe.max_drop / 100 if relative else recipe.max_drop,
        drop_type=sq.DropType.RELATIVE if relative else sq.DropType.ABSOLUTE,
        subset_size=recipe.subset_size,
        model_type=model_type,
        advanced_quantization_parameters=advanced,
        **kwargs,
    )


def ptq_statistics(model: nn.Module) -> dict[str, Any]:
    """What post-training quantization did, JSON-ready, for the job's statistics."""
    ctrl = sq.controller_of(model)
    assert isinstance(ctrl, QuantizationController)
    report = ctrl.ptq_report
    out: dict[str, Any] = {
        "samples": report.samples,
        "seconds": round(report.seconds, 3),
        "phase_seconds": {k: round(v, 3) for k, v in report.phase_seconds.items()},
        "equalized_pairs": report.equalized,
        "smooth_quant_alphas": report.smooth_quant_alphas,
        "bias_corrected_layers": len(report.bias_corrections),
    }
    if report.accuracy_control is not None:
        ac = report.accuracy_control
        out["accuracy_control"] = {
            key: ac.get(key)
            for key in ("fp32_metric", "int8_metric", "metric", "drop", "max_drop", "validations", "seconds")
        } | {"fp32_layers": [{"name": g["name"], "reason": g["reason"]} for g in ac["fp32_groups"]]}
    return out
