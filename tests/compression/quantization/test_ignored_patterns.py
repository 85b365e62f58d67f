"""Squeeze-and-excitation gates stay FP32 in post-training quantization (NNCF 3.x's "se_block" pattern),
on torchvision's SqueezeExcitation and on timm's way of writing one (x.mean + a sigmoid function)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import squeezer.compression as nncf
from squeezer.compression import NNCFConfig
from squeezer.errors import ConfigError


def _weight_quantized(model: nn.Module) -> set[str]:
    return {wp.module for wp in nncf.controller_of(model).setup.weights}


def test_torchvision_se_layers_stay_fp32_and_the_rest_is_quantized(tmp_path):
    from squeezer.examples.zoo import build, import_torchvision

    tv = import_torchvision()
    model = build("efficientnet_b0")
    batches = [torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    quantized = nncf.quantize(model, nncf.Dataset(batches), subset_size=8)
    se = {
        f"{name}.{fc}"
        for name, m in model.named_modules()
        if isinstance(m, tv.ops.SqueezeExcitation)
        for fc in ("fc1", "fc2")
    }
    convs = {name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert len(se) == 32
    assert _weight_quantized(quantized) == (convs - se) | {"classifier.1"}
    assert nncf.controller_of(quantized).export_model(str(tmp_path / "m.onnx"))  # verified in onnxruntime


class TimmStyleSE(nn.Module):
    """timm's SqueezeExcite: x.mean((2, 3), keepdim=True), conv_reduce, act, conv_expand, a gate function."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_reduce = nn.Conv2d(8, 2, 1)
        self.act = nn.ReLU()
        self.conv_expand = nn.Conv2d(2, 8, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        gate = torch.sigmoid(self.conv_expand(self.act(self.conv_reduce(x.mean((2, 3), keepdim=True)))))
        return self.head(x * gate)


def test_a_gate_written_with_functions_is_found_too():
    batches = [torch.randn(4, 3, 8, 8) for _ in range(2)]
    quantized = nncf.quantize(TimmStyleSE(), nncf.Dataset(batches), subset_size=8)
    assert _weight_quantized(quantized) == {"conv", "head"}


def test_the_onnxruntime_placement_keeps_gates_quantized():
    """onnxruntime runs the gate's convs, sigmoid and product as integer kernels when they are quantized."""
    batches = [torch.randn(4, 3, 8, 8) for _ in range(2)]
    for_ort = nncf.AdvancedQuantizationParameters(target_runtime="onnxruntime")
    quantized = nncf.quantize(TimmStyleSE(), nncf.Dataset(batches), subset_size=8, advanced_parameters=for_ort)
    assert _weight_quantized(quantized) == {"conv", "conv_reduce", "conv_expand", "head"}


def test_training_time_placement_keeps_gates_quantized_unless_asked():
    batches = [(torch.randn(4, 3, 8, 8), torch.zeros(4)) for _ in range(2)]
    for patterns, expected in (([], {"conv", "conv_reduce", "conv_expand", "head"}), (["se_block"], {"conv", "head"})):
        config = NNCFConfig.from_dict(
            {
                "input_info": {"sample_size": [1, 3, 8, 8]},
                "compression": {"algorithm": "quantization", "ignored_patterns": patterns},
            }
        )
        nncf.register_default_init_args(config, batches)
        _, model = nncf.create_compressed_model(TimmStyleSE(), config, dump_graphs=False)
        assert _weight_quantized(model) == expected


def test_an_unknown_pattern_is_named_with_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"ignored_patterns.*se_block"):
        NNCFConfig.from_dict({"compression": {"algorithm": "quantization", "ignored_patterns": ["se_blocks"]}})
