"""Squeezer: accuracy-aware neural-network compression (NNCF-compatible library, job service, SDK, CLI).

The library's names are re-exported lazily, so the SDK and the CLI start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from squeezer.errors import ConfigError, SqueezerError

if TYPE_CHECKING:
    from squeezer.compression import (
        CompressionStage,
        InitDataLoader,
        NNCFConfig,
        SqueezerConfig,
        create_accuracy_aware_training_loop,
        create_compressed_model,
        export_onnx,
        load_state,
        register_default_init_args,
        register_module,
        strip,
    )

__all__ = [
    "CompressionStage",
    "ConfigError",
    "InitDataLoader",
    "NNCFConfig",
    "SqueezerConfig",
    "SqueezerError",
    "create_accuracy_aware_training_loop",
    "create_compressed_model",
    "export_onnx",
    "load_state",
    "register_default_init_args",
    "register_module",
    "strip",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("squeezer.compression"), name)
    raise AttributeError(f"module 'squeezer' has no attribute {name!r}")
