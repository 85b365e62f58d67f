"""The built-in training recipe of a compression job (validated by the API, executed by workers).

Workers never run user code: a job names a task, a loss and an optimizer from this closed set.
No torch import here, so the API can validate recipes without it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["train", "ptq"] = Field(
        default="train",
        description="train: compress as the config says, with training epochs; ptq: post-training INT8 "
        "quantization from calibration samples (train_data's x; labels not needed), no training",
    )
    subset_size: int = Field(default=300, ge=1, le=1_000_000, description="ptq: calibration samples used")
    max_drop: float | None = Field(
        default=None,
        ge=0,
        description="ptq: accuracy control; layers go back to FP32 until the metric on val_data is within "
        "max_drop of the FP32 model's (in metric units: accuracy points for classification)",
    )
    drop_type: Literal["absolute", "relative"] = Field(
        default="absolute", description="ptq: max_drop in metric points, or in percent of the FP32 metric"
    )
    model_type: Literal["transformer"] | None = Field(
        default=None, description="'transformer' switches on SmoothQuant and the transformer placement (ptq init)"
    )
    init: Literal["range", "ptq"] = Field(
        default="range",
        description="train: how quantizers start; 'range' is the config's range init, 'ptq' the post-training "
        "steps (equalization, MSE ranges, bias correction, SmoothQuant for transformers), so training "
        "starts from the post-training model",
    )
    task: Literal["classification", "regression"] = "classification"
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(default=1e-3, gt=0, le=10)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    lr_schedule: Literal["constant", "cosine", "step"] = "constant"
    lr_step_epochs: int = Field(default=10, ge=1, le=10000)
    lr_gamma: float = Field(default=0.1, gt=0, le=1)
    batch_size: int = Field(default=64, ge=1, le=65536)
    epochs: int = Field(default=3, ge=1, le=10000, description="epochs when the config has no accuracy_aware_training")
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    max_wall_time_s: float | None = Field(
        default=None,
        gt=0,
        le=30 * 24 * 3600,
        description="the job fails with 'deadline' past this many seconds of running, keeping its last good "
        "checkpoint; at most the service's limit (SQUEEZER_JOB_MAX_WALL_TIME_S), which is also the default",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _ptq_only_fields(self) -> Recipe:
        if self.mode == "train" and self.max_drop is not None:
            raise ValueError("max_drop applies to mode 'ptq' (post-training quantization) only")
        if self.mode == "train" and self.model_type is not None and self.init != "ptq":
            raise ValueError("model_type applies to mode 'ptq' or to init 'ptq' only")
        return self


def ptq_config_problem(config: dict[str, Any]) -> str | None:
    """Why `config` cannot drive a post-training job (it asks for algorithms that need training), or None."""
    sections = config.get("compression") or []
    sections = [sections] if isinstance(sections, dict) else sections
    others = sorted({str(s.get("algorithm", "?")) for s in sections if isinstance(s, dict)} - {"quantization"})
    if others:
        return (
            f"post-training quantization (recipe mode 'ptq') quantizes only; the config also asks for "
            f"{', '.join(others)}: use mode 'train' for those algorithms"
        )
    device = config.get("target_device", "ANY")
    if device not in POST_TRAINING_DEVICES:
        return f"target_device {device!r} is not a post-training target; allowed: {', '.join(POST_TRAINING_DEVICES)}"
    return None


POST_TRAINING_DEVICES = ("ANY", "CPU", "GPU", "NPU", "CPU_SPR")  # NNCF 3.x's TargetDevice
