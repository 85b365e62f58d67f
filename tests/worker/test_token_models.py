"""Token-id models in the runner: integer x stays int64 (an embedding cannot read float ids), the
archive's input dtype and vocabulary are read from the graph, the data are checked against them before
anything trains, and a model with several outputs trains on its first (the logits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from torch import nn

from squeezer.client.packaging import export_model
from squeezer.recipe import Recipe
from squeezer.worker.runner import JobInputError, check_data, first_tensor, load_dataset, load_model_input

SEQ, VOCAB, CLASSES = 8, 50, 3


class TokenClassifier(nn.Module):
    """Embedding -> mean -> linear; returns a dict with logits first and a second tensor, like HF models."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.embed(ids)
        return {"logits": self.head(hidden.mean(1)), "hidden": hidden}


@pytest.fixture(scope="module")
def token_pt2(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tokens") / "model.pt2"
    return export_model(TokenClassifier(), torch.randint(0, VOCAB, (1, SEQ)), path)


def test_load_dataset_keeps_integer_x_as_int64_and_float_x_as_float32(tmp_path):
    ids = np.arange(24, dtype=np.int32).reshape(3, SEQ)
    np.savez(tmp_path / "ids.npz", x=ids, y=np.zeros(3, np.int64))
    save_file({"x": ids.astype(np.int64), "y": np.zeros(3, np.int64)}, str(tmp_path / "ids.safetensors"))
    np.savez(tmp_path / "features.npz", x=np.full((3, 4), 0.5, np.float64), y=np.zeros(3, np.int64))
    for name in ("ids.npz", "ids.safetensors"):
        x, _ = load_dataset(tmp_path / name)
        assert x.dtype == torch.int64 and torch.equal(x, torch.from_numpy(ids).long())  # not cast to float
    x, _ = load_dataset(tmp_path / "features.npz")
    assert x.dtype == torch.float32 and float(x[0, 0]) == 0.5


def test_the_archive_tells_the_input_dtype_and_vocabulary(token_pt2):
    model, model_input = load_model_input(token_pt2)
    assert model_input.shape == (1, SEQ) and model_input.dtype == torch.int64 and model_input.vocab == VOCAB
    out = model(torch.randint(0, VOCAB, (5, SEQ)))
    assert first_tensor(out).shape == (5, CLASSES)  # the dict became a tuple of tensors, logits first


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.rand(4, SEQ), "x is torch.float32; the model takes integer token ids"),
        (torch.full((4, SEQ), VOCAB), f"token ids must be in [0, {VOCAB - 1}], found [{VOCAB}, {VOCAB}]"),
        (torch.full((4, SEQ), -1), f"token ids must be in [0, {VOCAB - 1}], found [-1, -1]"),
    ],
)
def test_data_that_cannot_feed_token_ids_are_refused_before_training(token_pt2, x, message):
    model, model_input = load_model_input(token_pt2)
    with pytest.raises(JobInputError) as refused:
        check_data(model, model_input, x, torch.zeros(4, dtype=torch.long), Recipe(), "train_data")
    assert str(refused.value).startswith(f"train_data: {message}")


def test_fitting_token_ids_pass_the_checks(token_pt2):
    model, model_input = load_model_input(token_pt2)
    x = torch.randint(0, VOCAB, (4, SEQ))
    check_data(model, model_input, x, torch.tensor([0, 1, 2, 0]), Recipe(), "train_data")
    with pytest.raises(JobInputError, match=r"labels must be in \[0, 2\], found \[0, 3\]"):  # from the logits
        check_data(model, model_input, x, torch.tensor([0, 1, 2, 3]), Recipe(), "val_data")
