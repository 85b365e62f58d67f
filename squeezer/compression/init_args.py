"""Initialization data for compression: loaders and criteria kept beside the config.

A data loader used for initialization yields items; `get_inputs(item)` turns one into the model's
`(args, kwargs)`. Plain `(inputs, targets)` loaders are wrapped automatically; models whose inputs
are not a single tensor pass a subclass of `InitDataLoader` that overrides `get_inputs`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from squeezer.compression.config.nncf_config import NNCFConfig
from squeezer.errors import CompressionError


@runtime_checkable
class InitLoaderProtocol(Protocol):
    batch_size: int | None

    def __iter__(self) -> Iterator[Any]: ...

    def get_inputs(self, item: Any) -> tuple[tuple[Any, ...], dict[str, Any]]: ...

    def get_target(self, item: Any) -> Any: ...


class InitDataLoader:
    """Wraps a loader of `(inputs, target)` items; subclass and override `get_inputs` for other shapes."""

    def __init__(self, loader: Iterable[Any], batch_size: int | None = None) -> None:
        self.loader = loader
        self.batch_size = batch_size if batch_size is not None else getattr(loader, "batch_size", None)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def get_inputs(self, item: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (item[0],), {}

    def get_target(self, item: Any) -> Any:
        return item[1]


def wrap_dataloader_for_init(loader: Any) -> InitLoaderProtocol:
    """Use `loader` as is if it implements the protocol, else check that items are (inputs, target)."""
    if isinstance(loader, InitLoaderProtocol):
        return loader
    try:
        first = next(iter(loader))
    except StopIteration as exc:
        raise CompressionError("the initialization data loader is empty") from exc
    except TypeError as exc:
        raise CompressionError(f"the initialization data loader is not iterable: {exc}") from exc
    if not (isinstance(first, (tuple, list)) and len(first) == 2):
        raise CompressionError(
            "initialization loader items must be (inputs, target) pairs; for other structures pass a "
            "squeezer.compression.InitDataLoader subclass that overrides get_inputs(item)"
        )
    return InitDataLoader(loader)


def to_device(obj: Any, device: torch.device | str | None) -> Any:
    if device is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def first_batch(loader: InitLoaderProtocol, device: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """`(args, kwargs)` of the loader's first item, on `device`."""
    args, kwargs = loader.get_inputs(next(iter(loader)))
    return to_device(tuple(args), device), to_device(dict(kwargs), device)


def flatten_tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) model output in a fixed order (dict entries by sorted key)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in flatten_tensors(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_tensors(o)]
    return []


def iterate_batches(loader: InitLoaderProtocol, num_samples: int, device: Any) -> Iterator[tuple[tuple, dict]]:
    """Yield `(args, kwargs)` of ceil(num_samples / batch_size) batches (fewer if the loader is shorter)."""
    batch = loader.batch_size or 1
    n_batches = max(1, math.ceil(num_samples / batch))
    for item in itertools.islice(iter(loader), n_batches):
        args, kwargs = loader.get_inputs(item)
        yield to_device(tuple(args), device), to_device(dict(kwargs), device)


# ------------------------------------------------------------------------------------ extra structs


@dataclass
class _Struct:
    ID: ClassVar[str] = ""

    @classmethod
    def get_id(cls) -> str:
        return cls.ID


@dataclass
class QuantizationRangeInitArgs(_Struct):
    ID: ClassVar[str] = "quantization_range_init_args"
    data_loader: InitLoaderProtocol
    device: Any = None


@dataclass
class BNAdaptationInitArgs(_Struct):
    ID: ClassVar[str] = "bn_adaptation_init_args"
    data_loader: InitLoaderProtocol
    device: Any = None


@dataclass
class QuantizationPrecisionInitArgs(_Struct):
    ID: ClassVar[str] = "quantization_precision_init_args"
    criterion_fn: Callable[..., Any]
    criterion: Any
    data_loader: Any
    device: Any = None


@dataclass
class ModelEvaluationArgs(_Struct):
    ID: ClassVar[str] = "model_evaluation_args"
    eval_fn: Callable[..., Any]


@dataclass
class LeGRInitArgs(_Struct):
    ID: ClassVar[str] = "legr_init_args"
    train_loader: Any
    train_fn: Callable[..., Any]
    val_loader: Any
    val_fn: Callable[..., Any]
    train_optimizer: Any = None


def _default_criterion_fn(outputs: Any, target: Any, criterion: Any) -> Any:
    return criterion(outputs, target)


def register_default_init_args(
    nncf_config: NNCFConfig,
    train_loader: Any,
    criterion: Any = None,
    criterion_fn: Callable[..., Any] | None = None,
    train_steps_fn: Callable[..., Any] | None = None,
    validate_fn: Callable[..., Any] | None = None,
    val_loader: Any = None,
    autoq_eval_fn: Callable[..., Any] | None = None,
    model_eval_fn: Callable[..., Any] | None = None,
    distributed_callbacks: Any = None,
    execution_parameters: Any = None,
    legr_train_optimizer: Any = None,
    device: Any = None,
) -> NNCFConfig:
    """Attach initialization data to `nncf_config` and return it (NNCF's signature)."""
    del autoq_eval_fn, distributed_callbacks, execution_parameters  # accepted for compatibility
    if not isinstance(nncf_config, NNCFConfig):
        raise TypeError("register_default_init_args expects an NNCFConfig (use NNCFConfig.from_json)")
    loader = wrap_dataloader_for_init(train_loader)
    structs: list[Any] = [QuantizationRangeInitArgs(loader, device), BNAdaptationInitArgs(loader, device)]
    if criterion is not None:
        structs.append(
            QuantizationPrecisionInitArgs(criterion_fn or _default_criterion_fn, criterion, train_loader, device)
        )
    if model_eval_fn is not None:
        structs.append(ModelEvaluationArgs(model_eval_fn))
    if train_steps_fn and validate_fn and val_loader is not None:
        structs.append(LeGRInitArgs(train_loader, train_steps_fn, val_loader, validate_fn, legr_train_optimizer))
    nncf_config.register_extra_structs(structs)
    return nncf_config
