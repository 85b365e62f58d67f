"""Squeezer: accuracy-aware neural-network compression (NNCF-compatible library)."""

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
from squeezer.errors import ConfigError, SqueezerError

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
