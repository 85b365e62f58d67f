"""Squeezer: accuracy-aware neural-network compression (NNCF-compatible library)."""

from squeezer.compression import (
    CompressionStage,
    NNCFConfig,
    SqueezerConfig,
    create_compressed_model,
    export_onnx,
    load_state,
    register_default_init_args,
    register_module,
)
from squeezer.errors import ConfigError, SqueezerError

__all__ = [
    "CompressionStage",
    "ConfigError",
    "NNCFConfig",
    "SqueezerConfig",
    "SqueezerError",
    "create_compressed_model",
    "export_onnx",
    "load_state",
    "register_default_init_args",
    "register_module",
]
__version__ = "0.1.0"
