"""Early Exit and Adaptive Compression Level training loops.

Both follow NNCF's algorithm; the differences are deliberate: the returned model is the best
fully compressed checkpoint within the accuracy budget (else the best partially compressed one
within it, else the best one, and `statistics.result` says which); the reported compression rate
is the returned model's; no state is lost when nothing qualified; and the whole loop state can be
saved after any epoch and resumed in a fresh process.

This module is the entry point (`create_accuracy_aware_training_loop`) and the loops' public home; the
shared machinery is `base.py` (its saved state `state.py`), the modes `early_exit.py` and `adaptive.py`.
"""

from __future__ import annotations

from typing import Any

from squeezer.compression.accuracy_aware.adaptive import AdaptiveCompressionLoop
from squeezer.compression.accuracy_aware.base import TrainingLoop
from squeezer.compression.accuracy_aware.early_exit import EarlyExitLoop, FixedEpochsLoop
from squeezer.compression.accuracy_aware.state import STATE_VERSION
from squeezer.compression.config.models import EarlyExitConfig
from squeezer.compression.config.nncf_config import NNCFConfig
from squeezer.compression.controller import CompressionController
from squeezer.errors import ConfigError

__all__ = [
    "STATE_VERSION",
    "AdaptiveCompressionLoop",
    "EarlyExitLoop",
    "FixedEpochsLoop",
    "TrainingLoop",
    "create_accuracy_aware_training_loop",
]


def create_accuracy_aware_training_loop(
    nncf_config: NNCFConfig, compression_ctrl: CompressionController, uncompressed_model_accuracy: float, **options: Any
) -> TrainingLoop:
    """The loop the config's `accuracy_aware_training.mode` names (NNCF's entry point).

    Options: `on_epoch_end(record)` callback, `state_path` (loop state saved after every epoch),
    `lr_updates_needed`, `verbose`, `dump_checkpoints`; adaptive only: `minimal_compression_rate`,
    `maximal_compression_rate`.
    """
    section = nncf_config.model.accuracy_aware_training
    if section is None:
        raise ConfigError("the config has no accuracy_aware_training section", path="$.accuracy_aware_training")
    if isinstance(section, EarlyExitConfig):
        options.pop("minimal_compression_rate", None)
        options.pop("maximal_compression_rate", None)
        return EarlyExitLoop(section, compression_ctrl, uncompressed_model_accuracy, **options)
    return AdaptiveCompressionLoop(section, compression_ctrl, uncompressed_model_accuracy, **options)
