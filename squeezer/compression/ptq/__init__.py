"""Post-training quantization with NNCF 3.x's API: `quantize`, `quantize_with_accuracy_control`, `Dataset`."""

from squeezer.compression.ptq.accuracy_control import quantize_with_accuracy_control
from squeezer.compression.ptq.dataset import Dataset
from squeezer.compression.ptq.post_training import quantize
from squeezer.compression.ptq.types import (
    AdvancedAccuracyRestorerParameters,
    AdvancedQuantizationParameters,
    AdvancedSmoothQuantParameters,
    DropType,
    IgnoredScope,
    ModelType,
    QuantizationMode,
    QuantizationPreset,
    RangeEstimator,
    TargetDevice,
)

__all__ = [
    "AdvancedAccuracyRestorerParameters",
    "AdvancedQuantizationParameters",
    "AdvancedSmoothQuantParameters",
    "Dataset",
    "DropType",
    "IgnoredScope",
    "ModelType",
    "QuantizationMode",
    "QuantizationPreset",
    "RangeEstimator",
    "TargetDevice",
    "quantize",
    "quantize_with_accuracy_control",
]
