"""BatchNorm in the INT8 export: folded into the conv or Linear before it wherever that is exact (the
layer's int8 weights keep their grid, the channel scale takes BatchNorm's factor), so no float
BatchNormalization is left between integer layers; kept where BatchNorm normalizes other channels."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.client.packaging import export_model
from squeezer.compression.export.onnx_export import parity_bound
from squeezer.compression.graph.archive import load_exported_program
from squeezer.compression.graph.lift import lift_exported_program


def _random_stats(bn: nn.BatchNorm1d) -> nn.BatchNorm1d:
    """Statistics and an affine far from identity, some scales negative (the fold mirrors their grid)."""
    with torch.no_grad():
        n = bn.num_features
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.3, 3)
        bn.weight.copy_(torch.linspace(-2, 2, n) + 0.1)
        bn.bias.uniform_(-1, 1)
    return bn


class FlatMLP(nn.Module):
    """(N, C): BatchNorm1d normalizes the Linear's output features."""

    shape = (64,)

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(64, 32), _random_stats(nn.BatchNorm1d(32)), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


class MergedTokens(nn.Module):
    """timm's LeViT `LinearNorm`: (N, T, C) -> Linear -> flatten(0, 1) -> BatchNorm1d over C -> back."""

    shape = (6, 16)

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(16, 16), _random_stats(nn.BatchNorm1d(16)), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = self.bn(h.flatten(0, 1)).reshape_as(h)
        return self.fc2(torch.relu(h)).mean(1)


class Conv1dBN(nn.Module):
    """(N, C, L): BatchNorm1d normalizes the conv's output channels."""

    shape = (8, 12)

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv1d(8, 16, 3), _random_stats(nn.BatchNorm1d(16)), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(2))


class TokenAxisBN(nn.Module):
    """(N, L, C): BatchNorm1d normalizes axis 1, the L tokens, not the Linear's features, though both are 16."""

    shape = (16, 8)

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(8, 16), _random_stats(nn.BatchNorm1d(16)), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn(self.fc1(x)))).mean(1)


@pytest.mark.parametrize(
    ("model_cls", "left"),
    [(FlatMLP, 0), (MergedTokens, 0), (Conv1dBN, 0), (TokenAxisBN, 1)],
    ids=["linear-2d", "linear-flatten", "conv1d", "linear-3d-kept"],
)
@pytest.mark.parametrize("way_in", ["library", "service"])
def test_batchnorm_is_folded_where_exact(model_cls, left, way_in, tmp_path):
    """Both ways in: the library's fx trace, and the service's `.pt2` lifted from torch.export's aten graph."""
    torch.manual_seed(0)
    shape = model_cls.shape
    model: nn.Module = model_cls().eval()
    if way_in == "service":
        archive = export_model(model, torch.randn(2, *shape), tmp_path / "m.pt2")
        model = lift_exported_program(load_exported_program(archive))
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, *shape]}, "compression": {"algorithm": "quantization"}}
    )
    data = [(torch.randn(16, *shape), torch.zeros(16, dtype=torch.long)) for _ in range(2)]
    register_default_init_args(config, data)
    ctrl, compressed = create_compressed_model(model, config, dump_graphs=False)
    path = ctrl.export_model(tmp_path / "m.onnx")

    graph = onnx.load(str(path)).graph
    assert Counter(n.op_type for n in graph.node)["BatchNormalization"] == left
    weights = [numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith(".weight_quantized")]
    assert len(weights) == 2 and all(w.dtype == np.int8 for w in weights)  # the folded layer stays int8

    x = torch.randn(8, *shape)
    compressed.eval()
    with torch.no_grad():
        expected = compressed(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {"input.0": x.numpy()})[0]
    assert np.abs(actual - expected).max() <= parity_bound(expected, 0.05)


def _no_affine(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Sequential:
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.3, 3)
    return nn.Sequential(layer, bn, nn.ReLU()).eval()


@pytest.mark.parametrize(
    ("build", "shape"),
    [
        (lambda: _no_affine(nn.Linear(8, 16), nn.BatchNorm1d(16, affine=False)), (8,)),
        (lambda: _no_affine(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8, affine=False)), (3, 8, 8)),
    ],
    ids=["linear", "conv"],
)
def test_batchnorm_without_affine_folds(build, shape, tmp_path):
    """BatchNorm(affine=False) has no weight and bias: it folds with scale 1 and shift 0."""
    torch.manual_seed(0)
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, *shape]}, "compression": {"algorithm": "quantization"}}
    )
    register_default_init_args(config, [(torch.randn(16, *shape), torch.zeros(16, dtype=torch.long))])
    ctrl, _ = create_compressed_model(build(), config, dump_graphs=False)
    path = ctrl.export_model(tmp_path / "m.onnx")  # raises ExportError if onnxruntime disagrees
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(path)).graph.node}
