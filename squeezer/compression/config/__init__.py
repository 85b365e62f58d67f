"""NNCF JSON config: parsed once into typed pydantic models (`models`), wrapped by `NNCFConfig`."""

from squeezer.compression.config.models import CompressionConfigModel, QuantizationConfig
from squeezer.compression.config.nncf_config import NNCFConfig, SqueezerConfig

__all__ = ["CompressionConfigModel", "NNCFConfig", "QuantizationConfig", "SqueezerConfig"]
