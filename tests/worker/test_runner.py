"""The job runner on real files: a .pt2 archive, .npz/.safetensors digits, a built-in recipe."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from squeezer.examples.digits import accuracy, digits_loaders, train_epoch
from squeezer.examples.models import MLP, ResidualCNN
from squeezer.recipe import Recipe
from squeezer.worker.runner import JobInputError, load_model, run_job


@pytest.fixture(scope="module")
def job_files(tmp_path_factory):
    """A trained residual CNN as a torch.export archive, and digits as .npz (train) / .safetensors (val)."""
    from safetensors.numpy import save_file

    root = tmp_path_factory.mktemp("job")
    torch.manual_seed(0)
    train, val = digits_loaders(image_size=32)
    model = ResidualCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        train_epoch(model, train, opt)
    model.eval()
    program = torch.export.export(
        model, (torch.rand(2, 1, 32, 32),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
    )
    torch.export.save(program, root / "model.pt2")
    xs, ys = zip(*[(x, y) for x, y in train], strict=True)
    np.savez(root / "train.npz", x=torch.cat(xs).numpy(), y=torch.cat(ys).numpy())
    xv, yv = zip(*[(x, y) for x, y in val], strict=True)
    save_file({"x": torch.cat(xv).numpy(), "y": torch.cat(yv).numpy()}, str(root / "val.safetensors"))
    return root, accuracy(model, val)


INT8_EARLY_EXIT = {
    "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 256}}},
    "accuracy_aware_training": {
        "mode": "early_exit",
        "params": {"maximal_absolute_accuracy_degradation": 1.0, "maximal_total_epochs": 3},
    },
}


@pytest.mark.slow
def test_int8_early_exit_job_produces_a_verified_onnx(job_files, tmp_path):
    root, fp32_acc = job_files
    seen = []
    result = run_job(
        root / "model.pt2",
        INT8_EARLY_EXIT,
        root / "train.npz",
        root / "val.safetensors",
        Recipe(lr=1e-4, epochs=3),
        tmp_path,
        on_epoch=seen.append,
    )
    assert result.status == "succeeded"
    assert result.uncompressed_metric == pytest.approx(fp32_acc)  # the lifted archive evaluates like the model
    assert result.metric >= fp32_acc - 1.0
    assert [r["epoch"] for r in seen] == list(range(len(seen))) and seen == result.records
    assert set(result.artifacts) >= {"onnx", "checkpoint", "stripped", "original_graph", "compressed_graph"}
    from safetensors.torch import load_file as load_tensors

    lifted, _ = load_model(root / "model.pt2")
    stripped = load_tensors(result.artifacts["stripped"])  # the model's own keys, pickle-free
    assert set(stripped) == set(lifted.state_dict())
    lifted.load_state_dict(stripped)
    weight = lifted.state_dict()[next(k for k in stripped if k.endswith("conv1.weight"))]
    assert len(torch.unique(weight[0])) <= 256  # the weights are on an 8-bit grid

    session = ort.InferenceSession(result.artifacts["onnx"], providers=["CPUExecutionProvider"])
    from safetensors.numpy import load_file

    val = load_file(str(root / "val.safetensors"))
    ort_acc = 100.0 * float((session.run(None, {"input.0": val["x"]})[0].argmax(1) == val["y"]).mean())
    assert abs(ort_acc - result.metric) <= 0.5
    assert result.statistics["quantization"]["activation_quantizers"]["total"] == 14


@pytest.mark.slow
def test_cancel_after_an_epoch_keeps_what_was_made(job_files, tmp_path):
    root, _ = job_files
    config = {"compression": {"algorithm": "magnitude_sparsity", "sparsity_init": 0.3}}
    result = run_job(
        root / "model.pt2",
        config,
        root / "train.npz",
        root / "val.safetensors",
        Recipe(epochs=5),
        tmp_path,
        should_cancel=lambda: True,
    )
    assert result.status == "cancelled" and result.epochs == 1
    assert (tmp_path / "model.onnx").exists() and (tmp_path / "compression_checkpoint.pt").exists()


def test_regression_recipe_and_plain_epochs(tmp_path):
    torch.manual_seed(0)
    model = MLP(d_in=8, hidden=16, num_classes=2).eval()
    program = torch.export.export(model, (torch.rand(2, 8),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, tmp_path / "reg.pt2")
    x = np.random.default_rng(0).random((128, 8), dtype=np.float32)
    y = np.stack([x.sum(1), x[:, 0] - x[:, 1]], 1).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    result = run_job(
        tmp_path / "reg.pt2",
        {"compression": {"algorithm": "quantization"}},
        tmp_path / "data.npz",
        tmp_path / "data.npz",
        Recipe(task="regression", optimizer="sgd", lr=0.01, epochs=2, lr_schedule="cosine"),
        tmp_path / "work",
    )
    assert result.status == "succeeded" and result.epochs == 2
    assert result.uncompressed_metric < 0 and result.metric is not None and result.metric < 0  # negative MSE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("wrong_shape", r"train_data: samples have shape \(1, 16, 16\), the model takes \(1, 32, 32\)"),
        ("bad_labels", r"val_data: labels must be in \[0, 9\], found \[0, 12\]"),
        ("float_labels", r"classification labels must be a 1-D integer array"),
        ("missing_y", r"must hold arrays 'x' and 'y'; missing \['y'\]"),
        ("pickled", r"not a readable .npz or .safetensors file"),
        ("not_an_archive", r"not a torch.export archive"),
    ],
)
def test_bad_inputs_fail_before_training(change, message, tmp_path, job_files):
    root, _ = job_files
    model, train, val = root / "model.pt2", root / "train.npz", root / "val.safetensors"
    x = np.zeros((4, 1, 32, 32), np.float32)
    if change == "wrong_shape":
        np.savez(tmp_path / "t.npz", x=np.zeros((4, 1, 16, 16), np.float32), y=np.zeros(4, np.int64))
        train = tmp_path / "t.npz"
    elif change == "bad_labels":
        np.savez(tmp_path / "v.npz", x=x, y=np.array([0, 1, 12, 3]))
        val = tmp_path / "v.npz"
    elif change == "float_labels":
        np.savez(tmp_path / "t.npz", x=x, y=np.zeros(4, np.float32))
        train = tmp_path / "t.npz"
    elif change == "missing_y":
        np.savez(tmp_path / "t.npz", x=x)
        train = tmp_path / "t.npz"
    elif change == "pickled":
        np.savez(tmp_path / "t.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
        train = tmp_path / "t.npz"
    else:
        (tmp_path / "m.pt2").write_bytes(b"not a zip")
        model = tmp_path / "m.pt2"
    with pytest.raises(JobInputError, match=message):
        run_job(model, INT8_EARLY_EXIT, train, val, Recipe(), tmp_path / "work")
    assert not (tmp_path / "work" / "model.onnx").exists()
