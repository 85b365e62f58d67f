"""`"target_runtime": "onnxruntime"` leaves a transformer's residual and embedding sums FP32 and keeps a
CNN's quantized: onnxruntime runs `a + b` in integer (QLinearAdd) only when every reader of the sum is a
QuantizeLinear, so a sum read by a LayerNorm gets nothing from its quantized inputs but a
QuantizeLinear -> DequantizeLinear pair each (measured in bench/bench_transformers.py)."""

from __future__ import annotations

from collections import defaultdict

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args

INTEGER_MATMULS = {"MatMulIntegerToFloat", "QGemm", "QLinearMatMul"}
LAYOUT = {"Reshape", "Transpose"}
SUMS = {"Add", "QLinearAdd", "LayerNormalization", "SkipLayerNormalization"}


def compress(model: nn.Module, example: torch.Tensor, **top):
    config = NNCFConfig.from_dict(
        {
            "input_info": {
                "sample_size": [1, *example.shape[1:]],
                **({} if example.is_floating_point() else {"type": "long"}),
            },
            "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": len(example)}}},
            **top,
        }
    )
    register_default_init_args(config, [(example, torch.zeros(len(example), dtype=torch.long))], nn.CrossEntropyLoss())
    return create_compressed_model(model, config, dump_graphs=False)


def optimized_graph(path, tmp_path) -> onnx.GraphProto:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp_path / "optimized.onnx")).graph


def quantize_readers(graph: onnx.GraphProto) -> list[set[str]]:
    """Per QuantizeLinear: the op types that end up reading its int8 tensor (through Reshape / Transpose,
    and through a DequantizeLinear to the float op that reads it)."""
    readers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)

    def ends(name: str) -> set[str]:
        found: set[str] = set()
        for reader in readers[name]:
            if reader.op_type in LAYOUT | {"DequantizeLinear"}:
                found |= ends(reader.output[0])
            else:
                found.add(reader.op_type)
        return found

    return [ends(n.output[0]) for n in graph.node if n.op_type == "QuantizeLinear"]


@pytest.mark.parametrize("name", ["bert", "distilbert", "hf_vit"])
def test_transformer_sums_stay_fp32_and_every_linear_still_runs_in_integer(name, tmp_path):
    from squeezer.examples.zoo import ZOO, build

    example = ZOO[name].example_input(8)
    ctrl_nncf, _ = compress(build(name), example)
    ctrl_ort, _ = compress(build(name), example, target_runtime="onnxruntime")

    def reads_a_sum(ctrl) -> int:
        return sum(any("__add__" in c for c in a.consumers) for a in ctrl.setup.activations)

    assert reads_a_sum(ctrl_nncf) > 0
    assert reads_a_sum(ctrl_ort) == 0
    graph_nncf = optimized_graph(ctrl_nncf.export_model(tmp_path / "nncf.onnx"), tmp_path)
    graph_ort = optimized_graph(ctrl_ort.export_model(tmp_path / "ort.onnx"), tmp_path)  # parity-checked
    readers_nncf, readers_ort = quantize_readers(graph_nncf), quantize_readers(graph_ort)
    assert any(readers <= SUMS for readers in readers_nncf)  # quantized only for a sum: pure cost
    assert not any(readers <= SUMS for readers in readers_ort)
    assert "QLinearAdd" not in {n.op_type for n in graph_ort.node}
    matmuls = lambda g: sum(n.op_type in INTEGER_MATMULS for n in g.node)  # noqa: E731
    assert matmuls(graph_ort) == matmuls(graph_nncf)  # every Linear still runs in integer
    assert len(readers_ort) < len(readers_nncf)


class BasicBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)
        )
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.body(x))
        return self.head(x.mean((2, 3)))


def test_cnn_residual_sums_stay_integer(tmp_path):
    torch.manual_seed(0)
    ctrl, _ = compress(BasicBlock().eval(), torch.randn(8, 3, 16, 16), target_runtime="onnxruntime")
    assert sum(any("__add__" in c for c in a.consumers) for a in ctrl.setup.activations) == 2
    graph = optimized_graph(ctrl.export_model(tmp_path / "m.onnx"), tmp_path)
    assert [n.op_type for n in graph.node].count("QLinearAdd") == 1
