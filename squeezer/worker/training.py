"""How a training job trains: its inputs on their device, the compressed model, the optimizer, the
per-epoch training pass, the metric and the per-epoch record. `runner.run_job` puts these together
around a training loop (`compression/accuracy_aware`); kept apart so the job's steps read in one place
and each step stays short.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from squeezer.compression import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.compression.accuracy_aware.divergence import LossWatch
from squeezer.compression.ptq.post_training import calibrate_for_training
from squeezer.errors import SqueezerError
from squeezer.recipe import Recipe
from squeezer.worker.inputs import JobInputError, ModelInput, check_data, first_tensor, load_dataset, load_model_input
from squeezer.worker.tensorboard import journal_epoch

logger = logging.getLogger(__name__)


class JobCancelled(SqueezerError):
    """`should_cancel()` said so after an epoch."""


def device_for(recipe: Recipe) -> torch.device:
    if recipe.device == "cuda" or (recipe.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise JobInputError("the recipe asks for device 'cuda' but this worker has no GPU")
        return torch.device("cuda")
    return torch.device("cpu")


def task_loss(recipe: Recipe, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The task's loss; looked up at call time, so a test can wrap it (tests/worker/pausing.py)."""
    if recipe.task == "classification":
        return F.cross_entropy(out, y.long())
    return F.mse_loss(out, y.to(out.dtype))


def task_metric(recipe: Recipe, model: nn.Module, loader: DataLoader, device: torch.device) -> float:
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


def optimizers(recipe: Recipe, model: nn.Module, epochs: int) -> tuple[Any, Any]:
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


@dataclass
class TrainingInputs:
    """A training job's model and data, checked against each other and placed on its device."""

    model: nn.Module
    model_input: ModelInput
    train_set: TensorDataset
    val_loader: DataLoader
    init_loader: DataLoader
    x_val: torch.Tensor
    device: torch.device
    uncompressed: float


def training_inputs(
    model_path: str | Path, train_path: str | Path, val_path: str | Path, recipe: Recipe
) -> TrainingInputs:
    model, model_input = load_model_input(model_path)
    (x_train, y_train), (x_val, y_val) = load_dataset(train_path), load_dataset(val_path)
    check_data(model, model_input, x_train, y_train, recipe, "train_data")
    check_data(model, model_input, x_val, y_val, recipe, "val_data")
    if model_input.is_token_ids:  # ids are read as int64; an int32 input takes them as it was exported
        x_train, x_val = x_train.to(model_input.dtype), x_val.to(model_input.dtype)
    device = device_for(recipe)
    model.to(device)
    train_set = TensorDataset(x_train, y_train)
    val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=max(recipe.batch_size, 256))
    init_loader = DataLoader(train_set, batch_size=recipe.batch_size, shuffle=False)
    uncompressed = task_metric(recipe, model, val_loader, device)
    logger.info(
        "model input %s on %s; %d train / %d val samples; uncompressed metric %.4f",
        tuple(model_input.shape),
        device,
        len(x_train),
        len(x_val),
        uncompressed,
    )
    return TrainingInputs(model, model_input, train_set, val_loader, init_loader, x_val, device, uncompressed)


def compress_model(
    data: TrainingInputs, config: dict[str, Any], recipe: Recipe, workdir: Path
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
        criterion=lambda out, y: task_loss(recipe, first_tensor(out), y),
        device=data.device,
    )
    ctrl, cmodel = create_compressed_model(data.model, nncf_config)
    if recipe.init == "ptq":  # quantization-aware training starts where post-training quantization ends
        transformer = recipe.model_type == "transformer"
        calibrate_for_training(ctrl, data.init_loader, data.device, transformer, recipe.subset_size)
    return nncf_config, ctrl, cmodel


def epoch_trainer(recipe: Recipe, data: TrainingInputs) -> Callable[..., float]:
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
            loss = task_loss(recipe, out, y.to(data.device)) + compression_ctrl.loss()
            batch_losses.check(loss.item(), epoch + 1)  # stop at the first NaN, not after a whole epoch of them
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(y)
        return total / len(data.train_set)

    return train_epoch_fn


def recorder(
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
