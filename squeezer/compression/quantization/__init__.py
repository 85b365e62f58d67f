"""INT8 (2-8 bit) quantization-aware training: quantizers, placement, range init, strip."""

from squeezer.compression.quantization.algorithm import QuantizationController, build_quantization
from squeezer.compression.quantization.quantizer import FakeQuantizer, QuantizerSpec

__all__ = ["FakeQuantizer", "QuantizationController", "QuantizerSpec", "build_quantization"]
