"""A job's inputs, read and checked before anything is compressed: the model archive (loaded without
unpickling anything, `graph/archive.py`) and what its input takes, the data arrays, and whether the data
fit the model and the task. Shared by the training job (`training.py`) and the post-training job
(`runner.run_ptq_job`); a `JobInputError` here means nothing was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezer.compression import lift_exported_program
from squeezer.compression.graph.archive import UnsafeArchive, load_exported_program
from squeezer.errors import SqueezerError
from squeezer.recipe import Recipe


class JobInputError(SqueezerError):
    """The job's inputs do not fit together (data shapes, labels, archive); nothing was trained."""


def load_dataset(path: str | Path, labels: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`x` and `y` arrays from `.npz` (no pickles allowed) or `.safetensors`; with `labels=False` (calibration
    data) `y` may be absent and comes back as an empty tensor."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            arrays = load_file(str(path))
        else:
            with path.open("rb") as handle, np.load(handle, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise JobInputError(f"{path.name} is not a readable .npz or .safetensors file: {exc}") from exc
    if not labels and "x" in arrays and "y" not in arrays:
        arrays["y"] = np.zeros(len(arrays["x"]), dtype=np.int64)
    missing = {"x", "y"} - set(arrays)
    if missing:
        raise JobInputError(f"{path.name} must hold arrays 'x' and 'y'; missing {sorted(missing)}")
    x, y = arrays["x"], arrays["y"]
    if len(x) != len(y) or len(x) == 0:
        raise JobInputError(f"{path.name}: x has {len(x)} samples, y has {len(y)}; they must match and be > 0")
    # integer x are token ids (int64, as embeddings take them); anything else is float32 features
    x_dtype = np.int64 if x.dtype.kind in "iu" else np.float32
    return torch.from_numpy(np.ascontiguousarray(x, dtype=x_dtype)), torch.from_numpy(np.ascontiguousarray(y))


@dataclass(frozen=True)
class ModelInput:
    """What the archive's one input takes: its shape (batch first), its dtype, and for token ids the
    vocabulary size of the embedding that reads them (None when no embedding reads the input directly)."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    vocab: int | None = None

    @property
    def is_token_ids(self) -> bool:
        return not self.dtype.is_floating_point


def _vocab(program: torch.export.ExportedProgram, placeholder: torch.fx.Node) -> int | None:
    """The smallest table of the embeddings that index with the input directly: ids must be below it."""
    sizes = [
        int(node.args[0].meta["val"].shape[0])
        for node in program.graph.nodes
        if node.target is torch.ops.aten.embedding.default
        and len(node.args) > 1
        and node.args[1] is placeholder
        and isinstance(node.args[0], torch.fx.Node)
        and "val" in node.args[0].meta
    ]
    return min(sizes) if sizes else None


def load_model(path: str | Path) -> tuple[nn.Module, tuple[int, ...]]:
    """The archive as a trainable model, and its input shape (batch dimension first)."""
    model, model_input = load_model_input(path)
    return model, model_input.shape


def load_model_input(path: str | Path) -> tuple[nn.Module, ModelInput]:
    """The archive as a trainable model, and what its input takes (shape, dtype, vocabulary)."""
    try:
        program = load_exported_program(path)  # never unpickles: the archive is an upload
    except UnsafeArchive as exc:
        raise JobInputError(f"the model archive was refused: {exc}") from exc
    except Exception as exc:
        raise JobInputError(f"the model is not a torch.export archive (.pt2): {exc}") from exc
    inputs = [
        n for n in program.graph.nodes if n.op == "placeholder" and n.name in set(program.graph_signature.user_inputs)
    ]
    if len(inputs) != 1 or "val" not in inputs[0].meta:
        raise JobInputError(f"the model must take one tensor input, it takes {len(inputs)}")
    value = inputs[0].meta["val"]
    shape = tuple(int(d) if isinstance(d, int) else 1 for d in value.shape)
    vocab = _vocab(program, inputs[0]) if not value.dtype.is_floating_point else None
    return lift_exported_program(program), ModelInput(shape, value.dtype, vocab)


def first_tensor(out: Any) -> torch.Tensor:
    """The model's first tensor output (the logits of a model that returns a tuple or a dict)."""
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, dict) else out
    if isinstance(values, (tuple, list)) or isinstance(out, dict):
        for value in values:
            if value is not None:
                return first_tensor(value)
    raise JobInputError(f"the model returns {type(out).__name__}, not a tensor, a tuple or a dict of tensors")


def check_data(
    model: nn.Module, model_input: ModelInput, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, name: str
) -> None:
    check_features(model_input, x, name)
    check_labels(model, x, y, recipe, name)


def check_features(model_input: ModelInput, x: torch.Tensor, name: str) -> None:
    """x fits the model's input: sample shape, and floats or in-vocabulary token ids as it takes."""
    shape = model_input.shape
    if tuple(x.shape[1:]) != shape[1:]:
        raise JobInputError(f"{name}: samples have shape {tuple(x.shape[1:])}, the model takes {shape[1:]}")
    if model_input.is_token_ids:
        if x.dtype.is_floating_point:
            raise JobInputError(f"{name}: x is {x.dtype}; the model takes integer token ids ({model_input.dtype})")
        low, high = int(x.min()), int(x.max())
        if low < 0 or (model_input.vocab is not None and high >= model_input.vocab):
            allowed = f"[0, {model_input.vocab - 1}]" if model_input.vocab is not None else "non-negative"
            raise JobInputError(f"{name}: token ids must be in {allowed}, found [{low}, {high}]")
    elif not x.dtype.is_floating_point:
        raise JobInputError(
            f"{name}: x holds integers ({x.dtype}); the model takes float features ({model_input.dtype})"
        )


def check_labels(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, name: str) -> None:
    """y fits the task: class ids within the model's outputs, or targets of the output's shape."""
    with torch.no_grad():
        out = first_tensor(model.eval()(x[:2]))
    if recipe.task == "classification":
        n_classes = out.shape[-1]
        if y.dtype.is_floating_point or y.dim() != 1:
            raise JobInputError(
                f"{name}: classification labels must be a 1-D integer array, got {y.dtype} {tuple(y.shape)}"
            )
        if int(y.min()) < 0 or int(y.max()) >= n_classes:
            raise JobInputError(
                f"{name}: labels must be in [0, {n_classes - 1}], found [{int(y.min())}, {int(y.max())}]"
            )
    elif tuple(y.shape[1:]) != tuple(out.shape[1:]):
        raise JobInputError(
            f"{name}: regression targets have shape {tuple(y.shape[1:])}, the model outputs {tuple(out.shape[1:])}"
        )
