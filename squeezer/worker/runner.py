"""The job runner: plain functions that turn a model archive, a config, data and a recipe into a
compressed, onnxruntime-verified ONNX file (`outputs.py` lists the rest, the OpenVINO IR among them),
timed against the FP32 model on this CPU (`latency.py`). A worker calls `run_job` inside a job process of its
own (`sandbox/`), library users and tests call it directly; it knows nothing about the database, the
broker or HTTP.

Progress goes out through `on_epoch(record)`; `should_cancel()` is asked after every epoch; the
loop state is saved in `workdir` after every epoch so a job whose worker died resumes there.
Model archives are loaded without unpickling anything (`graph/archive.py`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from squeezer.compression import (
    NNCFConfig,
    create_accuracy_aware_training_loop,
    create_compressed_model,
    lift_exported_program,
    register_default_init_args,
)
from squeezer.compression.accuracy_aware import FixedEpochsLoop, LoopStatistics, TrainingLoop
from squeezer.compression.accuracy_aware.divergence import LossWatch
from squeezer.compression.api import controller_of
from squeezer.compression.graph.archive import UnsafeArchive, load_exported_program
from squeezer.compression.ptq.post_training import calibrate_for_training
from squeezer.errors import CompressionError, ConfigError, SqueezerError, TrainingDiverged
from squeezer.recipe import Recipe
from squeezer.runtime.compare import job_latency
from squeezer.worker.outputs import write_outputs
from squeezer.worker.post_training import ptq_statistics, quantize_for_job
from squeezer.worker.tensorboard import journal_epoch

logger = logging.getLogger(__name__)


class JobInputError(SqueezerError):
    """The job's inputs do not fit together (data shapes, labels, archive); nothing was trained."""


class JobCancelled(SqueezerError):
    """`should_cancel()` said so after an epoch."""


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


# ------------------------------------------------------------------------------------------ inputs


def load_dataset(path: str | Path, labels: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` and `y` arrays from `.npz` (no pickles allowed) or `.safetensors`; with `labels=False` (calibration
    data) `y` may be absent and comes back as an empty tensor."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            arrays = load_file(str(path))
        else:
            with path.open("rb") as handle, np.load(handle, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise JobInputError(f"{path.name} is not a readable .npz or .safetensors file: {exc}") from exc
    if not labels and "x" in arrays and "y" not in arrays:
        arrays["y"] = np.zeros(len(arrays["x"]), dtype=np.int64)
    missing = {"x", "y"} - set(arrays)
    if missing:
        raise JobInputError(f"{path.name} must hold arrays 'x' and 'y'; missing {sorted(missing)}")
    x, y = arrays["x"], arrays["y"]
    if len(x) != len(y) or len(x) == 0:
        raise JobInputError(f"{path.name}: x has {len(x)} samples, y has {len(y)}; they must match and be > 0")
    # integer x are token ids (int64, as embeddings take them); anything else is float32 features
    x_dtype = np.int64 if x.dtype.kind in "iu" else np.float32
    return torch.from_numpy(np.ascontiguousarray(x, dtype=x_dtype)), torch.from_numpy(np.ascontiguousarray(y))


@dataclass(frozen=True)
class ModelInput:
    """What the archive's one input takes: its shape (batch first), its dtype, and for token ids the
    vocabulary size of the embedding that reads them (None when no embedding reads the input directly)."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    vocab: int | None = None

    @property
    def is_token_ids(self) -> bool:
        return not self.dtype.is_floating_point


def _vocab(program: torch.export.ExportedProgram, placeholder: torch.fx.Node) -> int | None:
    """The smallest table of the embeddings that index with the input directly: ids must be below it."""
    sizes = [
        int(node.args[0].meta["val"].shape[0])
        for node in program.graph.nodes
        if node.target is torch.ops.aten.embedding.default
        and len(node.args) > 1
        and node.args[1] is placeholder
        and isinstance(node.args[0], torch.fx.Node)
        and "val" in node.args[0].meta
    ]
    return min(sizes) if sizes else None


def load_model(path: str | Path) -> tuple[nn.Module, tuple[int, ...]]:
    """The archive as a trainable model, and its input shape (batch dimension first)."""
    model, model_input = load_model_input(path)
    return model, model_input.shape


def load_model_input(path: str | Path) -> tuple[nn.Module, ModelInput]:
    """The archive as a trainable model, and what its input takes (shape, dtype, vocabulary)."""
    try:
        program = load_exported_program(path)  # never unpickles: the archive is an upload
    except UnsafeArchive as exc:
        raise JobInputError(f"the model archive was refused: {exc}") from exc
    except Exception as exc:
        raise JobInputError(f"the model is not a torch.export archive (.pt2): {exc}") from exc
    inputs = [
        n for n in program.graph.nodes if n.op == "placeholder" and n.name in set(program.graph_signature.user_inputs)
    ]
    if len(inputs) != 1 or "val" not in inputs[0].meta:
        raise JobInputError(f"the model must take one tensor input, it takes {len(inputs)}")
    value = inputs[0].meta["val"]
    shape = tuple(int(d) if isinstance(d, int) else 1 for d in value.shape)
    vocab = _vocab(program, inputs[0]) if not value.dtype.is_floating_point else None
    return lift_exported_program(program), ModelInput(shape, value.dtype, vocab)


def first_tensor(out: Any) -> torch.Tensor:
    """The model's first tensor output (the logits of a model that returns a tuple or a dict)."""
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out
    if isinstance(values, (tuple, list)) or isinstance(out, dict):
        for value in values:
            if value is not None:
                return first_tensor(value)
    raise JobInputError(f"the model returns {type(out).__name__}, not a tensor, a tuple or a dict of tensors")


def check_data(
    model: nn.Module, model_input: ModelInput, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, name: str
) -> None:
    check_features(model_input, x, name)
    check_labels(model, x, y, recipe, name)


def check_features(model_input: ModelInput, x: torch.Tensor, name: str) -> None:
    """x fits the model's input: sample shape, and floats or in-vocabulary token ids as it takes."""
    shape = model_input.shape
    if tuple(x.shape[1:]) != shape[1:]:
        raise JobInputError(f"{name}: samples have shape {tuple(x.shape[1:])}, the model takes {shape[1:]}")
    if model_input.is_token_ids:
        if x.dtype.is_floating_point:
            raise JobInputError(f"{name}: x is {x.dtype}; the model takes integer token ids ({model_input.dtype})")
        low, high = int(x.min()), int(x.max())
        if low < 0 or (model_input.vocab is not None and high >= model_input.vocab):
            allowed = f"[0, {model_input.vocab - 1}]" if model_input.vocab is not None else "non-negative"
            raise JobInputError(f"{name}: token ids must be in {allowed}, found [{low}, {high}]")
    elif not x.dtype.is_floating_point:
        raise JobInputError(
            f"{name}: x holds integers ({x.dtype}); the model takes float features ({model_input.dtype})"
        )


def check_labels(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, name: str) -> None:
    """y fits the task: class ids within the model's outputs, or targets of the output's shape."""
    with torch.no_grad():
        out = first_tensor(model.eval()(x[:2]))
    if recipe.task == "classification":
        n_classes = out.shape[-1]
        if y.dtype.is_floating_point or y.dim() != 1:
            raise JobInputError(
                f"{name}: classification labels must be a 1-D integer array, got {y.dtype} {tuple(y.shape)}"
            )
        if int(y.min()) < 0 or int(y.max()) >= n_classes:
            raise JobInputError(
                f"{name}: labels must be in [0, {n_classes - 1}], found [{int(y.min())}, {int(y.max())}]"
            )
    elif tuple(y.shape[1:]) != tuple(out.shape[1:]):
        raise JobInputError(
            f"{name}: regression targets have shape {tuple(y.shape[1:])}, the model outputs {tuple(out.shape[1:])}"
        )


# ------------------------------------------------------------------------------------------ training


def _device(recipe: Recipe) -> torch.device:
    if recipe.device == "cuda" or (recipe.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise JobInputError("the recipe asks for device 'cuda' but this worker has no GPU")
        return torch.device("cuda")
    return torch.device("cpu")


def _loss(recipe: Recipe, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if recipe.task == "classification":
        return F.cross_entropy(out, y.long())
    return F.mse_loss(out, y.to(out.dtype))


def _metric(recipe: Recipe, model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Top-1 accuracy in percent, or minus the mean squared error: higher is better for both."""
    model.eval()
    total, score = 0, 0.0
    with torch.no_grad():
        for x, y in loader:
            out = first_tensor(model(x.to(device)))
            y = y.to(device)
            if recipe.task == "classification":
                score += float((out.argmax(-1) == y).sum())
            else:
                score -= float(F.mse_loss(out, y.to(out.dtype), reduction="sum")) / max(1, out[0].numel())
            total += len(y)
    return 100.0 * score / total if recipe.task == "classification" else score / total


def _optimizers(recipe: Recipe, model: nn.Module, epochs: int) -> tuple[Any, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    elif recipe.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched: Any = None
    if recipe.lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    elif recipe.lr_schedule == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=recipe.lr_step_epochs, gamma=recipe.lr_gamma)
    return opt, sched


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
    data = _training_inputs(model_path, train_path, val_path, recipe)
    original_keys = set(data.model.state_dict())
    nncf_config, ctrl, cmodel = _compress(data, config, recipe, workdir)
    records: list[dict[str, Any]] = []
    state_path = workdir / "loop_state.pt"
    record = _recorder(records, workdir, on_epoch, should_cancel)
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
            _epoch_trainer(recipe, data),
            lambda model, epoch: _metric(recipe, model, data.val_loader, data.device),
            configure_optimizers_fn=lambda: _optimizers(recipe, cmodel, recipe.epochs),
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
    epochs = len(records) - 1 if records else 0
    statistics = ctrl.statistics().to_dict()
    return JobResult(
        status, data.uncompressed, metric, rate, epochs, records, statistics, artifacts, latency, warnings, error
    )


@dataclass
class _TrainingInputs:
    """A training job's model and data, checked against each other and placed on its device."""

    model: nn.Module
    model_input: ModelInput
    train_set: TensorDataset
    val_loader: DataLoader
    init_loader: DataLoader
    x_val: torch.Tensor
    device: torch.device
    uncompressed: float


def _training_inputs(
    model_path: str | Path, train_path: str | Path, val_path: str | Path, recipe: Recipe
) -> _TrainingInputs:
    model, model_input = load_model_input(model_path)
    (x_train, y_train), (x_val, y_val) = load_dataset(train_path), load_dataset(val_path)
    check_data(model, model_input, x_train, y_train, recipe, "train_data")
    check_data(model, model_input, x_val, y_val, recipe, "val_data")
    if model_input.is_token_ids:  # ids are read as int64; an int32 input takes them as it was exported
        x_train, x_val = x_train.to(model_input.dtype), x_val.to(model_input.dtype)
    device = _device(recipe)
    model.to(device)
    train_set = TensorDataset(x_train, y_train)
    val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=max(recipe.batch_size, 256))
    init_loader = DataLoader(train_set, batch_size=recipe.batch_size, shuffle=False)
    uncompressed = _metric(recipe, model, val_loader, device)
    logger.info(
        "model input %s on %s; %d train / %d val samples; uncompressed metric %.4f",
        tuple(model_input.shape),
        device,
        len(x_train),
        len(x_val),
        uncompressed,
    )
    return _TrainingInputs(model, model_input, train_set, val_loader, init_loader, x_val, device, uncompressed)


def _compress(
    data: _TrainingInputs, config: dict[str, Any], recipe: Recipe, workdir: Path
) -> tuple[NNCFConfig, Any, nn.Module]:
    """The config with the archive's inputs where it names none, and the compressed model (its ranges from
    post-training quantization when the recipe says `init: ptq`)."""
    nncf_config = NNCFConfig.from_dict({**config, "log_dir": str(workdir)})
    input_type = "long" if data.model_input.is_token_ids else "float"
    if nncf_config.model.input_info is None:
        nncf_config["input_info"] = {"sample_size": list(data.model_input.shape), "type": input_type}
    elif data.model_input.is_token_ids:  # the dummy inputs traced for the model must be ids too
        infos = config["input_info"] if isinstance(config["input_info"], list) else [config["input_info"]]
        nncf_config["input_info"] = [{**info, "type": "long"} for info in infos]
    register_default_init_args(  # the criterion is what HAWQ mixed precision differentiates
        nncf_config,
        data.init_loader,
        criterion=lambda out, y: _loss(recipe, first_tensor(out), y),
        device=data.device,
    )
    ctrl, cmodel = create_compressed_model(data.model, nncf_config)
    if recipe.init == "ptq":  # quantization-aware training starts where post-training quantization ends
        transformer = recipe.model_type == "transformer"
        calibrate_for_training(ctrl, data.init_loader, data.device, transformer, recipe.subset_size)
    return nncf_config, ctrl, cmodel


def _epoch_trainer(recipe: Recipe, data: _TrainingInputs) -> Callable[..., float]:
    """The loops' `train_epoch_fn`: one shuffled pass (its order fixed by the epoch, so a resumed job trains
    the same batches), stopped at the first diverging batch loss (`divergence.py`)."""
    batch_losses = LossWatch()

    def train_epoch_fn(
        compression_ctrl: Any, model: nn.Module, epoch: int, optimizer: Any, lr_scheduler: Any = None
    ) -> float:
        model.train()
        order = torch.Generator().manual_seed(recipe.seed * 100_003 + epoch)  # resumable: fixed by epoch
        loader = DataLoader(data.train_set, batch_size=recipe.batch_size, shuffle=True, generator=order)
        total = 0.0
        for x, y in loader:
            compression_ctrl.scheduler.step()
            out = first_tensor(model(x.to(data.device)))
            loss = _loss(recipe, out, y.to(data.device)) + compression_ctrl.loss()
            batch_losses.check(loss.item(), epoch + 1)  # stop at the first NaN, not after a whole epoch of them
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
        return total / len(data.train_set)

    return train_epoch_fn


def _recorder(
    records: list[dict[str, Any]],
    workdir: Path,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    should_cancel: Callable[[], bool] | None,
) -> Callable[[Any], None]:
    """The loops' `on_epoch_end`: log, keep, journal (the TensorBoard export's source) and report each
    epoch, then ask whether to stop."""

    def record(r: Any) -> None:
        logger.info(
            "epoch %d (%s): metric %.4f, compression rate %s, loss %s",
            r.epoch,
            r.stage,
            r.metric,
            r.compression_rate,
            r.loss,
        )
        records.append(r.to_dict())
        journal_epoch(workdir, r.to_dict())
        if on_epoch is not None:
            on_epoch(r.to_dict())
        if should_cancel is not None and r.epoch > 0 and should_cancel():
            raise JobCancelled(f"cancelled after epoch {r.epoch}")

    return record


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
    model = loop.restore(cmodel, lambda: _optimizers(recipe, cmodel, recipe.epochs), best=stopped != "cancelled")
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
    device = _device(recipe)
    model.to(device)
    val_loader, uncompressed, metric_fn = None, None, None
    if val_path is not None:
        x_val, y_val = load_dataset(val_path)
        check_data(model, model_input, x_val, y_val, recipe, "val_data")
        x_val = x_val.to(model_input.dtype) if model_input.is_token_ids else x_val
        val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=max(recipe.batch_size, 256))
        uncompressed = _metric(recipe, model, val_loader, device)

        def metric_fn(m: nn.Module, data: Any) -> float:
            return _metric(recipe, m, data, device)

    original_keys = set(model.state_dict())
    try:
        quantized = quantize_for_job(model, config, recipe, x_cal, device, metric_fn, val_loader)
    except (CompressionError, ConfigError) as exc:
        raise JobInputError(str(exc)) from exc
    ctrl = controller_of(quantized)
    post_training = ptq_statistics(quantized)
    metric = _metric(recipe, quantized, val_loader, device) if val_loader is not None else None
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
    statistics = ctrl.statistics().to_dict() | {"post_training": post_training}
    logger.info("post-training quantization: metric %s (FP32 %s); wrote %s", metric, uncompressed, sorted(artifacts))
    return JobResult("succeeded", uncompressed, metric, None, 0, records, statistics, artifacts, latency, warnings)


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
