"""The job runner: plain functions that turn a model archive, a config, data and a recipe into a
compressed, onnxruntime-verified ONNX file (`outputs.py` lists the rest, the OpenVINO IR among them),
timed against the FP32 model on this CPU (`latency.py`). A worker calls `run_job` inside a job process of its
own (`sandbox/`), library users and tests call it directly; it knows nothing about the database, the
broker or HTTP.

Progress goes out through `on_epoch(record)`; `should_cancel()` is asked after every epoch; the
loop state is saved in `workdir` after every epoch so a job whose worker died resumes there.
This module is the jobs' entry points and what they return; reading and checking the inputs is
`inputs.py` (model archives are loaded without unpickling anything), the training steps `training.py`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from squeezer.compression import create_accuracy_aware_training_loop
from squeezer.compression.accuracy_aware import FixedEpochsLoop, LoopStatistics, TrainingLoop
from squeezer.compression.api import controller_of
from squeezer.errors import CompressionError, ConfigError, TrainingDiverged
from squeezer.recipe import Recipe
from squeezer.runtime.compare import job_latency
from squeezer.worker.inputs import (  # re-exported: tests, the job process and library users import them from here
    JobInputError,
    ModelInput,
    check_data,
    check_features,
    check_labels,
    first_tensor,
    load_dataset,
    load_model,
    load_model_input,
)
from squeezer.worker.outputs import write_outputs
from squeezer.worker.post_training import ptq_statistics, quantize_for_job
from squeezer.worker.tensorboard import journal_epoch
from squeezer.worker.training import (
    JobCancelled,
    compress_model,
    device_for,
    epoch_trainer,
    optimizers,
    recorder,
    task_metric,
    training_inputs,
)

__all__ = [
    "JobCancelled",
    "JobInputError",
    "JobResult",
    "ModelInput",
    "check_data",
    "check_features",
    "check_labels",
    "first_tensor",
    "load_dataset",
    "load_model",
    "load_model_input",
    "run_job",
    "run_ptq_job",
]

logger = logging.getLogger(__name__)


@dataclass
class JobResult:
    status: str  # "succeeded", "cancelled", or "failed" with outputs (the loss diverged; `error` says so)
    uncompressed_metric: float | None  # None: a post-training job without val_data measured no metric
    metric: float | None
    compression_rate: float | None
    epochs: int
    records: list[dict[str, Any]] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # kind -> path in workdir
    # runtime -> {fp32_ms, compressed_ms, speedup, batch_size, runs}, on this CPU (runtime/compare.py)
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. the compressed model is not faster
    error: str | None = None  # why a "failed" run (a diverged loss) failed; its best earlier model is kept

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_job(
    model_path: str | Path,
    config: dict[str, Any],
    train_path: str | Path,
    val_path: str | Path | None,
    recipe: Recipe | dict[str, Any],
    workdir: str | Path,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    latency_batch_size: int | None = None,
    stopped: str | None = None,
) -> JobResult:
    """Compress the archived model as `config` says, training with `recipe`; files land in `workdir`.
    Latency is measured on a batch of `latency_batch_size` validation samples (default: the recipe's
    batch size; a search asks for the batch size its user deploys at).

    `stopped` ("cancelled" or "deadline"): the worker stopped this job's process between two saves of its
    loop state; train nothing, and write the outputs of what the last finished epoch saved (a cancel keeps
    that epoch's model, as a cancel read after an epoch does; a deadline keeps the best checkpoint)."""
    recipe = Recipe.model_validate(recipe)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    if recipe.mode == "ptq":
        return run_ptq_job(model_path, config, train_path, val_path, recipe, workdir, on_epoch, latency_batch_size)
    if val_path is None:
        raise JobInputError("a training job needs val_data (the metric the accuracy budget is measured on)")
    data = training_inputs(model_path, train_path, val_path, recipe)
    original_keys = set(data.model.state_dict())
    nncf_config, ctrl, cmodel = compress_model(data, config, recipe, workdir)
    records: list[dict[str, Any]] = []
    state_path = workdir / "loop_state.pt"
    record = recorder(records, workdir, on_epoch, should_cancel)
    loop: TrainingLoop
    if nncf_config.model.accuracy_aware_training is None:
        loop = FixedEpochsLoop(recipe.epochs, ctrl, data.uncompressed, on_epoch_end=record, state_path=state_path)
    else:
        loop = create_accuracy_aware_training_loop(
            nncf_config, ctrl, data.uncompressed, on_epoch_end=record, state_path=state_path
        )
    if state_path.exists():
        loop.load_state(state_path)
    if stopped is not None:
        return _keep_saved_state(
            loop, ctrl, cmodel, recipe, stopped, workdir, original_keys, data.x_val, data.uncompressed
        )
    status = "succeeded"
    try:
        cmodel = loop.run(
            cmodel,
            epoch_trainer(recipe, data),
            lambda model, epoch: task_metric(recipe, model, data.val_loader, data.device),
            configure_optimizers_fn=lambda: optimizers(recipe, cmodel, recipe.epochs),
        )
        stats = loop.statistics
        metric, rate = (stats.compressed_accuracy, stats.compression_rate) if stats else (None, None)
    except JobCancelled:
        status = "cancelled"
        metric, rate = (records[-1]["metric"], records[-1]["compression_rate"]) if records else (None, None)
    warnings: list[str] = []
    error = None
    if loop.diverged is not None and loop.statistics is not None:
        status, error = "failed", _divergence_report(loop.diverged, loop.statistics, recipe, warnings)
    artifacts = write_outputs(ctrl, cmodel, workdir, original_keys, data.x_val[:8], warnings)
    logger.info("%s: metric %s, compression rate %s; wrote %s", status, metric, rate, ", ".join(sorted(artifacts)))
    latency: dict[str, dict[str, Any]] = {}
    if status == "succeeded":  # a cancelled job was asked to stop, not to be timed
        sample = data.x_val[: latency_batch_size or recipe.batch_size]
        latency = _latency(data.model, artifacts["onnx"], sample, workdir, warnings)
        _placement_hint(ctrl, latency, warnings)
    epochs = len(records) - 1 if records else 0
    statistics = ctrl.statistics().to_dict()
    return JobResult(
        status, data.uncompressed, metric, rate, epochs, records, statistics, artifacts, latency, warnings, error
    )


def _keep_saved_state(
    loop: TrainingLoop,
    ctrl: Any,
    cmodel: nn.Module,
    recipe: Recipe,
    stopped: str,
    workdir: Path,
    original_keys: set[str],
    x_val: torch.Tensor,
    uncompressed: float,
) -> JobResult:
    """The outputs of a job stopped mid-epoch, from its saved loop state; none when no epoch was saved."""
    status = "cancelled" if stopped == "cancelled" else "failed"
    if not loop.has_saved_state:
        logger.info("%s before any epoch was saved: no outputs to keep", stopped)
        return JobResult(status, uncompressed, None, None, 0)
    model = loop.restore(cmodel, lambda: optimizers(recipe, cmodel, recipe.epochs), best=stopped != "cancelled")
    records = [r.to_dict() for r in loop.records]
    kept = loop.statistics if stopped != "cancelled" else None
    metric = kept.compressed_accuracy if kept else records[-1]["metric"]
    rate = kept.compression_rate if kept else records[-1]["compression_rate"]
    warnings: list[str] = []
    epoch = kept.returned_epoch if kept else records[-1]["epoch"]
    warnings.append(f"stopped ({stopped}) during epoch {records[-1]['epoch'] + 1}; the outputs are epoch {epoch}'s")
    artifacts = write_outputs(ctrl, model, workdir, original_keys, x_val[:8], warnings)
    logger.info("%s: kept epoch %d (metric %s); wrote %s", stopped, epoch, metric, ", ".join(sorted(artifacts)))
    statistics = ctrl.statistics().to_dict()
    return JobResult(status, uncompressed, metric, rate, len(records) - 1, records, statistics, artifacts, {}, warnings)


def _divergence_report(diverged: TrainingDiverged, stats: LoopStatistics, recipe: Recipe, warnings: list[str]) -> str:
    """The job's error (what happened, what to change) and a warning saying which epoch's model was kept."""
    within = "within" if stats.accuracy_budget >= 0 else "outside"
    warnings.append(
        f"training stopped at epoch {diverged.epoch} on a diverging loss; the exported model is epoch "
        f"{stats.returned_epoch}'s (metric {stats.compressed_accuracy:.4g}, {within} the accuracy budget)"
    )
    return f"{diverged}: lower the learning rate (recipe.lr is {recipe.lr:g}; try {recipe.lr / 10:g})"


def run_ptq_job(
    model_path: str | Path,
    config: dict[str, Any],
    calibration_path: str | Path,
    val_path: str | Path | None,
    recipe: Recipe,
    workdir: Path,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    latency_batch_size: int | None,
) -> JobResult:
    """Post-training quantization (`post_training.py`): no training, no labels needed for calibration."""
    model, model_input = load_model_input(model_path)
    x_cal, _ = load_dataset(calibration_path, labels=False)
    check_features(model_input, x_cal, "train_data")
    x_cal = x_cal.to(model_input.dtype) if model_input.is_token_ids else x_cal
    device = device_for(recipe)
    model.to(device)
    val_loader, uncompressed, metric_fn = None, None, None
    if val_path is not None:
        x_val, y_val = load_dataset(val_path)
        check_data(model, model_input, x_val, y_val, recipe, "val_data")
        x_val = x_val.to(model_input.dtype) if model_input.is_token_ids else x_val
        val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=max(recipe.batch_size, 256))
        uncompressed = task_metric(recipe, model, val_loader, device)

        def metric_fn(m: nn.Module, data: Any) -> float:
            return task_metric(recipe, m, data, device)

    original_keys = set(model.state_dict())
    try:
        quantized = quantize_for_job(model, config, recipe, x_cal, device, metric_fn, val_loader)
    except (CompressionError, ConfigError) as exc:
        raise JobInputError(str(exc)) from exc
    ctrl = controller_of(quantized)
    post_training = ptq_statistics(quantized)
    metric = task_metric(recipe, quantized, val_loader, device) if val_loader is not None else None
    records: list[dict[str, Any]] = []
    if metric is not None:
        record = {
            "epoch": 0,
            "phase": "post_training",
            "stage": ctrl.compression_stage().name,
            "metric": metric,
            # accuracy control's floor; without max_drop the FP32 metric is the reference
            "accuracy_budget": (uncompressed or 0.0) - (recipe.max_drop or 0.0),
            "wall_time_s": post_training["seconds"],
        }
        records.append(record)
        journal_epoch(workdir, record)
        if on_epoch is not None:
            on_epoch(record)
    warnings: list[str] = []
    sample = (x_val if val_path is not None else x_cal)[: latency_batch_size or recipe.batch_size]
    artifacts = write_outputs(ctrl, quantized, workdir, original_keys, sample[:8], warnings)
    latency = _latency(model, artifacts["onnx"], sample, workdir, warnings)
    _placement_hint(ctrl, latency, warnings)
    statistics = ctrl.statistics().to_dict() | {"post_training": post_training}
    logger.info("post-training quantization: metric %s (FP32 %s); wrote %s", metric, uncompressed, sorted(artifacts))
    return JobResult("succeeded", uncompressed, metric, None, 0, records, statistics, artifacts, latency, warnings)


def _placement_hint(ctrl: Any, latency: dict[str, dict[str, Any]], warnings: list[str]) -> None:
    """A file slower than FP32 in onnxruntime whose quantizers sit where OpenVINO fuses them: say how to get
    onnxruntime's placement (a post-training MobileNetV3-small ran 0.13x FP32 there, 1.18x in OpenVINO)."""
    onnxruntime = latency.get("onnxruntime")
    quantizing = next((c for c in ctrl.child_ctrls if c.name == "quantization"), None)  # none: nothing placed
    placement = getattr(getattr(quantizing, "context", None), "placement", None)
    if onnxruntime and onnxruntime["speedup"] < 1.0 and placement is not None and placement.name != "onnxruntime":
        warnings.append(
            "its quantizers are placed for OpenVINO (NNCF's placement); for onnxruntime, set "
            '"target_runtime": "onnxruntime" in the config: it places them where onnxruntime has integer kernels'
        )
        logger.warning("%s", warnings[-1])  # every warning of a job is in its log too


def _latency(
    model: nn.Module, onnx_path: str, sample: torch.Tensor, workdir: Path, warnings: list[str]
) -> dict[str, dict[str, Any]]:
    """FP32 against compressed latency of the exported files on this CPU (`runtime/compare.py`); a
    measurement that fails is a warning, not a failed job: the compressed model is made and verified."""
    try:
        report, slower = job_latency(model, onnx_path, sample.cpu(), workdir)
    except Exception as exc:
        logger.warning("latency not measured: %s", exc, exc_info=True)
        warnings.append(f"latency not measured: {type(exc).__name__}: {exc}")
        return {}
    warnings.extend(slower)
    return report
