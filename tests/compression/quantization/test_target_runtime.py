"""`"target_runtime": "onnxruntime"`: the convs before SiLU / Hardswish / Sigmoid get their output
quantized, so onnxruntime runs them as integer kernels; NNCF's placement stays the default."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from tests.compression.export.test_export import optimized_ops


class SiluBlock(nn.Module):
    """EfficientNet's shape of things: conv-BN-SiLU, a squeeze-excitation gate, conv-BN-Hardswish."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.SiLU())
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1), nn.SiLU(), nn.Conv2d(4, 16, 1), nn.Sigmoid()
        )
        self.body = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Hardswish())
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.body(x * self.gate(x))
        return self.head(x.mean((2, 3)))


def compress(**top):
    torch.manual_seed(0)
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 3, 16, 16]}, "compression": {"algorithm": "quantization"}, **top}
    )
    data = [(torch.randn(8, 3, 16, 16), torch.zeros(8, dtype=torch.long)) for _ in range(2)]
    register_default_init_args(config, data, criterion=nn.CrossEntropyLoss())
    return create_compressed_model(SiluBlock(), config, dump_graphs=False)


def quantized_outputs(ctrl) -> set[str]:
    return {p for a in ctrl.setup.activations for p in a.producers}


def test_onnxruntime_target_quantizes_conv_outputs_before_non_fusable_activations(tmp_path):
    ctrl_nncf, _ = compress()
    ctrl_ort, _ = compress(target_runtime="onnxruntime")
    added = quantized_outputs(ctrl_ort) - quantized_outputs(ctrl_nncf)
    assert sorted(a.rsplit("/", 1)[-1] for a in added) == ["batch_norm_0", "batch_norm_0"]  # stem, body
    assert all("gate" not in a for a in added)  # the 1x1 gate is too small to gain
    assert quantized_outputs(ctrl_nncf) <= quantized_outputs(ctrl_ort)  # NNCF's points all stay

    fused_nncf = optimized_ops(ctrl_nncf.export_model(tmp_path / "nncf.onnx"), tmp_path)
    fused_ort = optimized_ops(ctrl_ort.export_model(tmp_path / "ort.onnx"), tmp_path)
    # both 3x3 convs become integer kernels only when their output is quantized
    assert fused_ort["QLinearConv"] == fused_nncf["QLinearConv"] + 2


@pytest.mark.parametrize("device", ["GPU", "TRIAL"])
def test_other_devices_keep_nncf_placement(device):
    ctrl_plain, _ = compress(target_device=device)
    ctrl_ort, _ = compress(target_device=device, target_runtime="onnxruntime")
    assert quantized_outputs(ctrl_plain) == quantized_outputs(ctrl_ort)


class DenseBlock(nn.Module):
    """DenseNet's shape of things: conv branches concatenated, then BN-ReLU (not quantized) and a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 1)
        self.norm = nn.Sequential(nn.BatchNorm2d(16), nn.ReLU())
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(torch.cat([self.a(x), self.b(x)], 1))).mean((2, 3))


def test_onnxruntime_target_quantizes_concat_inputs(tmp_path):
    config = {"input_info": {"sample_size": [1, 3, 8, 8]}, "compression": {"algorithm": "quantization"}}
    data = [(torch.randn(8, 3, 8, 8), torch.zeros(8, dtype=torch.long))]
    ctrls = []
    for extra in ({}, {"target_runtime": "onnxruntime"}):
        torch.manual_seed(0)
        nncf_config = NNCFConfig.from_dict({**config, **extra})
        register_default_init_args(nncf_config, data, criterion=nn.CrossEntropyLoss())
        ctrls.append(create_compressed_model(DenseBlock(), nncf_config, dump_graphs=False)[0])
    plain, ort = ctrls
    added = quantized_outputs(ort) - quantized_outputs(plain)
    assert sorted(a.split("/")[-2] for a in added) == ["Conv2d[a]", "Conv2d[b]"]
    fused_plain = optimized_ops(plain.export_model(tmp_path / "plain.onnx"), tmp_path)
    fused_ort = optimized_ops(ort.export_model(tmp_path / "ort.onnx"), tmp_path)
    assert fused_ort["QLinearConv"] == fused_plain["QLinearConv"] + 2  # both branch convs


@pytest.mark.slow
def test_onnxruntime_target_on_densenet_and_googlenet(tmp_path):
    """DenseNet reuses every feature map in several concats; GoogLeNet has branches behind pooling and
    a classifier whose tiny inputs put its bias outside int32. Both place, train, export and verify."""
    from squeezer.examples.zoo import ZOO, build

    for name in ("densenet121", "googlenet"):
        spec = ZOO[name]
        config = NNCFConfig.from_dict(
            {
                "input_info": {"sample_size": [1, *spec.input_shape[1:]]},
                "target_runtime": "onnxruntime",
                "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 4}}},
            }
        )
        data = [(spec.example_input(4), torch.zeros(4, dtype=torch.long))]
        register_default_init_args(config, data, criterion=nn.CrossEntropyLoss())
        ctrl, compressed = create_compressed_model(build(name), config, dump_graphs=False)
        compressed.train()
        compressed(spec.example_input(2)).sum().backward()
        compressed.eval()
        path = ctrl.export_model(tmp_path / f"{name}.onnx")  # verified against torch in onnxruntime
        assert optimized_ops(path, tmp_path)["Conv"] == 0, name  # every conv runs as QLinearConv
