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


class HardGateSE(TimmStyleSE):
    """MobileNetV3's gate: adaptive pooling, ReLU and a Hardsigmoid module."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        return self.head(x * self.gate(self.conv_expand(self.act(self.conv_reduce(self.pool(x))))))


def _onnx_graph(path) -> tuple[dict[str, str], list]:
    """({tensor: the op type that writes it}, the nodes) of an ONNX file."""
    import onnx

    nodes = list(onnx.load(str(path)).graph.node)
    return {out: n.op_type for n in nodes for out in n.output}, nodes


@pytest.mark.parametrize("model_class", [TimmStyleSE, HardGateSE])
def test_the_squeeze_reads_the_tensor_the_product_reads(model_class, tmp_path):
    """No quantizer on the mean's input: its FP32 layer gains nothing from one, and one there splits the
    tensor the product also reads, so OpenVINO cannot fuse it into the layer before (MobileNetV3-small
    1.19x -> 1.31x FP32)."""
    batches = [torch.randn(4, 3, 8, 8) for _ in range(2)]
    quantized = nncf.quantize(model_class(), nncf.Dataset(batches), subset_size=8)
    path = nncf.controller_of(quantized).export_model(str(tmp_path / "m.onnx"))  # verified in onnxruntime
    producer, nodes = _onnx_graph(path)
    (mean,) = [n for n in nodes if n.op_type in ("ReduceMean", "GlobalAveragePool")]
    (product,) = [n for n in nodes if n.op_type == "Mul" and all(i in producer for i in n.input)]
    assert producer[mean.input[0]] != "DequantizeLinear"
    assert mean.input[0] in product.input  # one tensor, unquantized, for both
    head = nodes[-1]
    assert head.op_type == "Conv" and producer[head.input[0]] == "DequantizeLinear"  # the product's is quantized


def test_an_fp32_hardsigmoid_exports_in_the_form_openvino_fuses(tmp_path):
    """`clip(x + 3, 0, 6) / 6`, which OpenVINO fuses into the conv before it: no separate kernel runs it.
    onnxruntime's placement quantizes the gate, and there HardSigmoid stays one op."""
    from squeezer.compression.export.openvino_import import import_openvino

    batches = [torch.randn(4, 3, 8, 8) for _ in range(2)]
    default = nncf.quantize(HardGateSE(), nncf.Dataset(batches), subset_size=8)
    path = nncf.controller_of(default).export_model(str(tmp_path / "ov.onnx"))  # verified in onnxruntime
    ops = [n.op_type for n in _onnx_graph(path)[1]]
    assert "HardSigmoid" not in ops and "Clip" in ops
    compiled = import_openvino().Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    kernels = [
        (op.get_rt_info()["layerType"].astype(str), op.get_rt_info()["originalLayersNames"].astype(str).split(","))
        for op in compiled.get_runtime_model().get_ordered_ops()
    ]
    (expand,) = [(kind, names) for kind, names in kernels if "/conv_expand/Conv" in names]
    assert expand[0] == "Convolution" and "/gate/Div" in expand[1]  # the whole gate runs in the conv's kernel
    for_ort = nncf.AdvancedQuantizationParameters(target_runtime="onnxruntime")
    ort = nncf.quantize(HardGateSE(), nncf.Dataset(batches), subset_size=8, advanced_parameters=for_ort)
    producer, nodes = _onnx_graph(nncf.controller_of(ort).export_model(str(tmp_path / "ort.onnx")))
    (gate,) = [n for n in nodes if n.op_type == "HardSigmoid"]
    assert producer[gate.input[0]] == "DequantizeLinear" and "Clip" not in [n.op_type for n in nodes]
