"""The compression library: NNCF-compatible training-time compression for PyTorch models.

Its names load lazily (PEP 562): the API validates configs with `squeezer.compression.config`, which
needs pydantic only, and must not pay for torch, onnx and torch-pruning. The first name taken from
here imports the library; each algorithm's implementation is imported when a config first names it
(`registry.Algorithm.load`), so `quantize` never pays for pruning's torch-pruning (and its timm import).
It never imports the service.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from squeezer.compression.accuracy_aware import create_accuracy_aware_training_loop
    from squeezer.compression.api import controller_of, create_compressed_model, load_state, strip
    from squeezer.compression.config import NNCFConfig, SqueezerConfig
    from squeezer.compression.controller import CompositeController, CompressionController, CompressionStage
    from squeezer.compression.export.onnx_export import export_onnx
    from squeezer.compression.graph.archive import UnsafeArchive, load_exported_program
    from squeezer.compression.graph.lift import lift_exported_program
    from squeezer.compression.graph.modules import register_module
    from squeezer.compression.init_args import InitDataLoader, register_default_init_args
    from squeezer.compression.ptq import (
        AdvancedAccuracyRestorerParameters,
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        Dataset,
        DropType,
        IgnoredScope,
        ModelType,
        QuantizationMode,
        QuantizationPreset,
        RangeEstimator,
        TargetDevice,
        quantize,
        quantize_with_accuracy_control,
    )

_SOURCES = {
    "create_accuracy_aware_training_loop": "squeezer.compression.accuracy_aware",
    "create_compressed_model": "squeezer.compression.api",
    "load_state": "squeezer.compression.api",
    "strip": "squeezer.compression.api",
    "NNCFConfig": "squeezer.compression.config",
    "SqueezerConfig": "squeezer.compression.config",
    "CompositeController": "squeezer.compression.controller",
    "CompressionController": "squeezer.compression.controller",
    "CompressionStage": "squeezer.compression.controller",
    "export_onnx": "squeezer.compression.export.onnx_export",
    "UnsafeArchive": "squeezer.compression.graph.archive",
    "load_exported_program": "squeezer.compression.graph.archive",
    "lift_exported_program": "squeezer.compression.graph.lift",
    "register_module": "squeezer.compression.graph.modules",
    "InitDataLoader": "squeezer.compression.init_args",
    "register_default_init_args": "squeezer.compression.init_args",
    "controller_of": "squeezer.compression.api",
}
# NNCF 3.x's post-training API: `import squeezer.compression as nncf; nncf.quantize(...)`
_PTQ_NAMES = (
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
)
_SOURCES.update(dict.fromkeys(_PTQ_NAMES, "squeezer.compression.ptq"))

__all__ = [
    "AdvancedAccuracyRestorerParameters",
    "AdvancedQuantizationParameters",
    "AdvancedSmoothQuantParameters",
    "CompositeController",
    "CompressionController",
    "CompressionStage",
    "Dataset",
    "DropType",
    "IgnoredScope",
    "InitDataLoader",
    "ModelType",
    "NNCFConfig",
    "QuantizationMode",
    "QuantizationPreset",
    "RangeEstimator",
    "SqueezerConfig",
    "TargetDevice",
    "UnsafeArchive",
    "controller_of",
    "create_accuracy_aware_training_loop",
    "create_compressed_model",
    "export_onnx",
    "lift_exported_program",
    "load_algorithms",
    "load_exported_program",
    "load_state",
    "quantize",
    "quantize_with_accuracy_control",
    "register_default_init_args",
    "register_module",
    "strip",
]


def load_algorithms() -> None:
    """Register every built-in algorithm (idempotent: modules are imported once).

    The modules to import are the registry's (`squeezer.compression.registry`), which needs pydantic only.
    """
    from squeezer.compression import registry

    registry.load_algorithms()


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module 'squeezer.compression' has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value
