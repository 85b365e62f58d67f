"""`Dataset` (NNCF's wrapper of a data source and a transform) and the checked calibration batches.

An item of the data source, after `transform_fn`, is what the model is called with: a tensor is
`model(x)`, a tuple or list `model(*x)`, a dict `model(**x)` (NNCF's convention for torch models).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezer.compression.graph.surgery import evaluating
from squeezer.compression.init_args import flatten_tensors, to_device
from squeezer.errors import CompressionError

Inputs = tuple[tuple[Any, ...], dict[str, Any]]


class Dataset:
    """A data source (any iterable: a DataLoader, a list) with a function that turns its items into
    model inputs; `nncf.Dataset` by the same name and signature."""

    def __init__(self, data_source: Iterable[Any], transform_fn: Callable[[Any], Any] | None = None) -> None:
        if not isinstance(data_source, Iterable):
            raise TypeError(f"Dataset needs an iterable data source, got {type(data_source).__name__}")
        self._data_source = data_source
        self._transform_fn = transform_fn

    def __iter__(self) -> Iterator[Any]:
        return self.get_inference_data()

    def get_data(self, indices: list[int] | None = None) -> Iterator[Any]:
        """The raw items (all, or those at the sorted `indices`)."""
        items = iter(self._data_source)
        if indices is None:
            return items
        wanted = sorted(indices)
        return (item for i, item in enumerate(itertools.islice(items, wanted[-1] + 1 if wanted else 0)) if i in wanted)

    def get_inference_data(self, indices: list[int] | None = None) -> Iterator[Any]:
        """The model inputs: each item after `transform_fn`."""
        transform = self._transform_fn or (lambda item: item)
        return (transform(item) for item in self.get_data(indices))

    def get_length(self) -> int | None:
        return len(self._data_source) if hasattr(self._data_source, "__len__") else None  # type: ignore[arg-type]

    def get_batch_size(self) -> int | None:
        return getattr(self._data_source, "batch_size", None)


def as_inputs(item: Any) -> Inputs:
    """NNCF's calling convention: tensor -> model(x), tuple/list -> model(*x), dict -> model(**x)."""
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(item)
    if isinstance(item, torch.Tensor):
        return (item,), {}
    if isinstance(item, dict):
        return (), {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in item.items()}
    if isinstance(item, (tuple, list)):
        return tuple(torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in item), {}
    raise CompressionError(
        f"a calibration item (after transform_fn) is a {type(item).__name__}; the model is called with a "
        f"tensor, a tuple of model arguments or a dict of keyword arguments"
    )


def batch_size_of(inputs: Inputs) -> int:
    """Samples in one batch: the leading dimension of its first tensor (1 for a scalar-only batch)."""
    tensors = [t for t in flatten_tensors(list(inputs[0]) + [inputs[1][k] for k in sorted(inputs[1])])]
    return int(tensors[0].shape[0]) if tensors and tensors[0].dim() else 1


def _describe(inputs: Inputs) -> str:
    args, kwargs = inputs
    parts = [f"{tuple(t.shape)} {t.dtype}" for t in flatten_tensors(list(args))]
    parts += [f"{k}={tuple(v.shape)} {v.dtype}" for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    return ", ".join(parts) or "no tensors"


def _check_finite(inputs: Inputs, index: int, what: str) -> None:
    args, kwargs = inputs
    for t in flatten_tensors([*args, kwargs]):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CompressionError(
                f"{what} item {index} holds {bad} NaN or infinite values; calibration needs finite data"
            )


def collect_batches(
    dataset: Dataset | Iterable[Any], subset_size: int, model: nn.Module, device: torch.device, what: str
) -> list[Inputs]:
    """The first batches holding `subset_size` samples, checked: finite, and the model runs on them."""
    if subset_size < 1:
        raise CompressionError(f"subset_size must be at least 1, got {subset_size}")
    source = dataset.get_inference_data() if isinstance(dataset, Dataset) else iter(dataset)
    batches: list[Inputs] = []
    samples = 0
    for index, item in enumerate(source):
        inputs = as_inputs(item)
        _check_finite(inputs, index, what)
        inputs = (to_device(tuple(inputs[0]), device), to_device(dict(inputs[1]), device))
        if index == 0:
            _check_runs(model, inputs, what)
        batches.append(inputs)
        samples += batch_size_of(inputs)
        if samples >= subset_size:
            break
    if not batches:
        raise CompressionError(f"{what} is empty: it needs at least one sample")
    return batches


def _check_runs(model: nn.Module, inputs: Inputs, what: str) -> None:
    try:
        with evaluating(model), torch.no_grad():
            model(*inputs[0], **inputs[1])
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise CompressionError(
            f"the model does not run on {what} item 0 (after transform_fn: {_describe(inputs)}): {message}"
        ) from exc


class BatchLoader:
    """The checked batches as an init loader for `create_compressed_model` (items are `(args, kwargs)`)."""

    def __init__(self, batches: list[Inputs]) -> None:
        self.batches = batches
        self.batch_size: int | None = batch_size_of(batches[0])

    def __iter__(self) -> Iterator[Inputs]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def get_inputs(self, item: Inputs) -> Inputs:
        return item

    def get_target(self, item: Inputs) -> Any:
        return None
