"""`register_module`: make a custom module with a `weight` compressible like a built-in layer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

# Layers with a compressible `weight` (norm layers are never sparsified or quantized).
WEIGHTED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.Embedding,
    nn.EmbeddingBag,
)
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
)

_REGISTERED: dict[type, dict[str, Any]] = {}


def register_module(
    *quantizable_field_names: str,
    ignored_algorithms: Iterable[str] | None = None,
    target_weight_dim_for_compression: int = 0,
) -> Callable[[type], type]:
    """Class decorator: the module is traced as one leaf op and its `weight` is compressed.

    As in NNCF, only the `weight` field is supported; `ignored_algorithms` lists algorithms
    (e.g. "quantization") that must leave the module alone.
    """
    fields = quantizable_field_names or ("weight",)
    if tuple(fields) != ("weight",):
        raise ValueError(f"only the 'weight' field can be compressed, got {list(fields)}")

    def wrap(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"register_module decorates torch.nn.Module subclasses, got {cls!r}")
        _REGISTERED[cls] = {
            "ignored_algorithms": set(ignored_algorithms or ()),
            "weight_dim": target_weight_dim_for_compression,
        }
        return cls

    return wrap


# Third-party layers registered by name (their libraries are not imported here):
# Hugging Face's Conv1D (GPT-2) is a Linear with its weight stored (in, out): out = x @ W + b.
_KNOWN_LAYERS: dict[tuple[str, str], dict[str, Any]] = {
    ("transformers.pytorch_utils", "Conv1D"): {"ignored_algorithms": {"filter_pruning"}, "weight_dim": 1},
}


def _registration_of(cls: type) -> dict[str, Any] | None:
    for c in cls.__mro__:
        if c in _REGISTERED:
            return _REGISTERED[c]
        known = _KNOWN_LAYERS.get((c.__module__, c.__name__))
        if known is not None:
            return known
    return None


def is_user_registered(m: nn.Module | type) -> bool:
    return _registration_of(m if isinstance(m, type) else type(m)) is not None


def registration(m: nn.Module) -> dict[str, Any] | None:
    return _registration_of(type(m))


def is_weighted_for(module: nn.Module, algorithm: str) -> bool:
    """Whether `algorithm` compresses `module`'s `weight`: the one "is this a layer" rule of every algorithm.

    A registered module (`register_module`) is, unless it lists `algorithm` in its ignored algorithms (even
    a subclass of a built-in layer); otherwise the built-in layers of WEIGHTED_LAYERS are. Either way its
    `weight` must be a tensor.
    """
    reg = registration(module)
    weighted = algorithm not in reg["ignored_algorithms"] if reg is not None else isinstance(module, WEIGHTED_LAYERS)
    return weighted and isinstance(getattr(module, "weight", None), torch.Tensor)
