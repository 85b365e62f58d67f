"""Turn what a user holds (an `nn.Module`, arrays, a config) into the files the service takes.

torch is imported here only, so the rest of the SDK starts fast.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np


def export_model(model: Any, example_input: Any, path: Path) -> Path:
    """`torch.export` the model in eval mode to a `.pt2` archive, batch dimension dynamic (the service
    trains and verifies at other batch sizes, and refuses a static batch)."""
    import torch

    example = example_input
    if example.shape[0] == 1:  # torch.export specializes size-1 dimensions
        example = example.expand(2, *example.shape[1:]).clone()
    dynamic = ({0: torch.export.Dim("batch", min=1)},)
    was_training = model.training
    model.eval()
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
    finally:
        model.train(was_training)
    torch.export.save(program, path)
    return path


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def dataset_bytes(data: tuple[Any, Any]) -> bytes:
    """An (x, y) pair of arrays or tensors as `.npz` bytes (no pickles)."""
    x, y = data
    buffer = io.BytesIO()
    np.savez(buffer, x=_numpy(x), y=_numpy(y))
    return buffer.getvalue()


def config_dict(config: Any) -> dict[str, Any]:
    """A config given as a dict (or `NNCFConfig`) or as a path to a JSON file."""
    if isinstance(config, dict):
        return dict(config)
    path = Path(config)
    import jstyleson  # NNCF configs may carry comments

    loaded = jstyleson.loads(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: a compression config is a JSON object, got {type(loaded).__name__}")
    return loaded
