"""INT8 (2-8 bit) quantization-aware training: quantizers, placement, range init, strip.

The algorithm's names load lazily (PEP 562): `quantization.algorithm` builds on the controller, while
the export below the controller reads `quantization.quantizer` and `quantization.placement`; importing
either submodule must not import the algorithm (and through it the controller) on the way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from squeezer.compression.quantization.quantizer import FakeQuantizer, QuantizerSpec

if TYPE_CHECKING:
    from squeezer.compression.quantization.algorithm import QuantizationController, build_quantization

__all__ = ["FakeQuantizer", "QuantizationController", "QuantizerSpec", "build_quantization"]
_LAZY = {"QuantizationController", "build_quantization"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("squeezer.compression.quantization.algorithm"), name)
    globals()[name] = value
    return value
