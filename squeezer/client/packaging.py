"""Turn what a user holds (an `nn.Module`, arrays, a config) into the files the service takes.

torch is imported here only, so the rest of the SDK starts fast.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def tensor_outputs(output: Any) -> Any:
    """A model's output as a tensor or a flat tuple of tensors, in order: a dict or an HF `ModelOutput`
    (its set fields, logits first) or a nested tuple. The service loads archives without the user's
    code, so it cannot rebuild an output class such as `SequenceClassifierOutput`."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, Mapping) else output
    if not isinstance(values, (tuple, list)) and not isinstance(output, Mapping):
        raise TypeError(f"the model returns {type(output).__name__}; it must return tensors, a tuple or a dict")
    flat: list[Any] = []
    for value in values:
        if value is None:
            continue
        leaf = tensor_outputs(value)
        flat.extend(leaf if isinstance(leaf, tuple) else (leaf,))
    if not flat:
        raise TypeError(f"the model returns {type(output).__name__} without any tensor")
    return flat[0] if len(flat) == 1 else tuple(flat)


def export_model(model: Any, example_input: Any, path: Path) -> Path:
    """`torch.export` the model in eval mode to a `.pt2` archive, batch dimension dynamic (the service
    trains and verifies at other batch sizes, and refuses a static batch); other dimensions (a token-id
    input's sequence length) stay static. The archive returns plain tensors (`tensor_outputs`)."""
    import torch

    example = example_input
    if example.shape[0] == 1:  # torch.export specializes size-1 dimensions
        example = example.expand(2, *example.shape[1:]).clone()
    dynamic = ({0: torch.export.Dim("batch", min=1)},)
    was_training = model.training
    forward, own_forward = model.forward, model.__dict__.get("forward")
    model.eval()
    # an instance attribute, not a wrapper module: the archive keeps the model's own parameter names
    model.forward = lambda x: tensor_outputs(forward(x))
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
    finally:
        if own_forward is None:
            del model.forward
        else:
            model.forward = own_forward
        model.train(was_training)
    torch.export.save(program, path)
    return path


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def dataset_bytes(data: tuple[Any, Any] | Any) -> bytes:
    """An (x, y) pair of arrays or tensors as `.npz` bytes (no pickles); a lone array or tensor is x
    without labels (calibration samples for post-training quantization)."""
    buffer = io.BytesIO()
    if isinstance(data, tuple):
        x, y = data
        np.savez(buffer, x=_numpy(x), y=_numpy(y))
    else:
        np.savez(buffer, x=_numpy(data))
    return buffer.getvalue()
