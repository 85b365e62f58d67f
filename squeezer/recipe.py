"""The built-in training recipe of a compression job (validated by the API, executed by workers).

Workers never run user code: a job names a task, a loss and an optimizer from this closed set.
No torch import here, so the API can validate recipes without it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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
    device: Literal["auto", "cpu", "cuda"] = "auto"
