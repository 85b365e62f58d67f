"""Accuracy-aware training: Early Exit and Adaptive Compression Level loops."""

from squeezer.compression.accuracy_aware.loop import (
    AdaptiveCompressionLoop,
    EarlyExitLoop,
    FixedEpochsLoop,
    TrainingLoop,
    create_accuracy_aware_training_loop,
)
from squeezer.compression.accuracy_aware.records import EpochRecord, LoopStatistics

__all__ = [
    "AdaptiveCompressionLoop",
    "EarlyExitLoop",
    "EpochRecord",
    "FixedEpochsLoop",
    "LoopStatistics",
    "TrainingLoop",
    "create_accuracy_aware_training_loop",
]
