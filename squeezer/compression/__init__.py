"""The compression library: NNCF-compatible training-time compression for PyTorch models.

Importing it registers the algorithms; it never imports the service.
"""

from squeezer.compression import distillation as _distillation  # noqa: F401
from squeezer.compression import pruning as _pruning  # noqa: F401
from squeezer.compression import quantization as _quantization  # noqa: F401  (registers the algorithm)
from squeezer.compression import sparsity as _sparsity  # noqa: F401
from squeezer.compression.accuracy_aware import create_accuracy_aware_training_loop
from squeezer.compression.api import create_compressed_model, load_state, strip
from squeezer.compression.config import NNCFConfig, SqueezerConfig
from squeezer.compression.controller import CompositeController, CompressionController, CompressionStage
from squeezer.compression.export.onnx_export import export_onnx
from squeezer.compression.graph.archive import UnsafeArchive, load_exported_program
from squeezer.compression.graph.lift import lift_exported_program
from squeezer.compression.graph.modules import register_module
from squeezer.compression.init_args import InitDataLoader, register_default_init_args

__all__ = [
    "CompositeController",
    "CompressionController",
    "CompressionStage",
    "InitDataLoader",
    "NNCFConfig",
    "SqueezerConfig",
    "UnsafeArchive",
    "create_accuracy_aware_training_loop",
    "create_compressed_model",
    "export_onnx",
    "lift_exported_program",
    "load_exported_program",
    "load_state",
    "register_default_init_args",
    "register_module",
    "strip",
]
