"""`"target_runtime": "onnxruntime"`: the inputs onnxruntime's QDQ fusions need are quantized (convs
before SiLU / Hardswish / Sigmoid / a feature-map LayerNorm, gates and their products, concat branches,
split halves), so it runs them as integer kernels; NNCF's placement stays the default."""

from __future__ import annotations

import copy
import operator

import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.compression.export.onnx_export import export_onnx
from squeezer.compression.graph.trace import trace
from squeezer.compression.quantization.gated_activations import split_gated_activations
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


def test_onnxruntime_target_runs_silu_and_squeeze_excitation_as_integer_kernels(tmp_path):
    """quantize_static's layout: SiLU written out as x * sigmoid(x), gate, product and every conv
    (the 1x1 gate convs included) quantized, so nothing runs in FP32 but Hardswish's HardSigmoid."""
    ctrl_nncf, _ = compress()
    ctrl_ort, _ = compress(target_runtime="onnxruntime")
    added = quantized_outputs(ctrl_ort) - quantized_outputs(ctrl_nncf)
    for scope in ("stem]/SiLU[2]", "gate]/SiLU[2]", "body]/Hardswish[2]"):
        assert {f"{scope}/__mul___0", f"{scope}/{'hardsigmoid' if 'Hard' in scope else 'sigmoid'}_0"} <= {
            a.split("Sequential[", 1)[1] for a in added
        }
    assert {"gate]/Conv2d[1]/conv2d_0", "gate]/Conv2d[3]/conv2d_0", "gate]/Sigmoid[4]/sigmoid_0"} <= {
        a.split("Sequential[", 1)[1] for a in added
    }

    fused_nncf = optimized_ops(ctrl_nncf.export_model(tmp_path / "nncf.onnx"), tmp_path)
    fused_ort = optimized_ops(ctrl_ort.export_model(tmp_path / "ort.onnx"), tmp_path)  # parity-checked
    assert fused_nncf["Conv"] + fused_nncf["FusedConv"] > 0 and fused_nncf["QLinearMul"] == 0
    assert fused_ort["QLinearConv"] == 4  # stem, both gate convs, body
    assert fused_ort["QLinearSigmoid"] == 3  # two SiLUs and the gate
    assert fused_ort["QLinearMul"] == 4  # two SiLUs, x * gate, Hardswish
    assert not {"Conv", "FusedConv", "Sigmoid", "Mul", "QuickGelu"} & set(fused_ort)


def test_gated_activations_are_written_out_with_the_same_result():
    gm = trace(SiluBlock().eval())
    x = torch.randn(2, 3, 16, 16)
    expected = gm(x)
    assert split_gated_activations(gm) == 3  # stem SiLU, gate SiLU, body Hardswish
    torch.testing.assert_close(gm(x), expected)
    targets = {n.target for n in gm.graph.nodes}
    assert {torch.sigmoid, F.hardsigmoid, operator.mul} <= targets


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


def _dense_block_ctrls() -> list:
    """DenseBlock quantized with the default (OpenVINO's) placement and with onnxruntime's."""
    config = {"input_info": {"sample_size": [1, 3, 8, 8]}, "compression": {"algorithm": "quantization"}}
    data = [(torch.randn(8, 3, 8, 8), torch.zeros(8, dtype=torch.long))]
    ctrls = []
    for extra in ({}, {"target_runtime": "onnxruntime"}):
        torch.manual_seed(0)
        nncf_config = NNCFConfig.from_dict({**config, **extra})
        register_default_init_args(nncf_config, data, criterion=nn.CrossEntropyLoss())
        ctrls.append(create_compressed_model(DenseBlock(), nncf_config, dump_graphs=False)[0])
    return ctrls


def _concat_input_types(path) -> list[int]:
    """The ONNX element types of the zero points of the DequantizeLinears that the concat reads."""
    graph = onnx.load(str(path)).graph
    producer = {out: n for n in graph.node for out in n.output}
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    constants |= {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
    (concat,) = [n for n in graph.node if n.op_type == "Concat" and all(i in producer for i in n.input)]
    dequantize = [producer[i] for i in concat.input]
    assert all(n.op_type == "DequantizeLinear" for n in dequantize)  # both branches quantized
    return [onnx.helper.np_dtype_to_tensor_dtype(constants[n.input[2]].dtype) for n in dequantize]


def test_both_placements_quantize_concat_inputs_each_in_its_runtime_s_type(tmp_path):
    """The branches of a concat that a BatchNorm reads are quantized in both placements. onnxruntime's
    file stores them uint8, so both branch convs run as QLinearConv; the default (OpenVINO's) file stores
    the signed ones int8, so that OpenVINO concatenates INT8 and folds the dequantization into the next
    quantizer (DenseNet-121: 2.18x -> 2.60x FP32 in OpenVINO, NNCF 3.4's IR 2.56x)."""
    plain, ort = _dense_block_ctrls()
    branches = {a.split("/")[-2] for a in quantized_outputs(plain) & quantized_outputs(ort)}
    assert {"Conv2d[a]", "Conv2d[b]"} <= branches
    plain_path, ort_path = plain.export_model(tmp_path / "plain.onnx"), ort.export_model(tmp_path / "ort.onnx")
    assert _concat_input_types(plain_path) == [onnx.TensorProto.INT8] * 2  # conv outputs: signed
    assert _concat_input_types(ort_path) == [onnx.TensorProto.UINT8] * 2
    assert optimized_ops(ort_path, tmp_path)["QLinearConv"] == 3  # a, b and out

    from squeezer.compression.export.openvino_import import import_openvino

    compiled = import_openvino().Core().compile_model(str(plain_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    kernels = {op.get_rt_info()["layerType"].astype(str): op for op in compiled.get_runtime_model().get_ordered_ops()}
    assert kernels["Concatenation"].get_rt_info()["runtimePrecision"].astype(str).lower() in ("i8", "u8")
    assert "Convert" not in kernels  # the concat's dequantization went into the next quantizer


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["densenet121", "googlenet", "efficientnet_b0", "mobilenet_v3_small", "shufflenet_v2_x0_5", "convnext_tiny"],
)
def test_onnxruntime_target_on_zoo_cnns(name, tmp_path):
    """DenseNet reuses every feature map in several concats; GoogLeNet has branches behind pooling and
    a classifier whose tiny inputs put its bias outside int32; EfficientNet and MobileNetV3 have their
    SiLU / Hardswish written out; ShuffleNet splits and shuffles; ConvNeXt normalizes channels-last.
    All place, train, export, pass the export's parity check, and run every conv as QLinearConv."""
    from squeezer.examples.zoo import ZOO, build

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
    ops = optimized_ops(path, tmp_path)
    assert ops["Conv"] + ops["FusedConv"] == 0 and ops["QLinearConv"] > 0  # every conv integer


class ShuffleBlock(nn.Module):
    """ShuffleNetV2's shape of things: split in halves, a conv branch on one, concat, channel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.stem(x).chunk(2, dim=1)
        y = torch.cat([x1, self.branch(x2)], 1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.out(y).mean((2, 3))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's shape of things: depthwise conv, LayerNorm over channels-last, MLP, residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.norm = nn.LayerNorm(8)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.mlp(self.norm(self.dw(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return (x + y).mean((2, 3))


class SequenceNorm(nn.Module):
    """A transformer's shape of things: LayerNorm over tokens (3-D) after a residual sum."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.b = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.norm(self.a(x) + x))


def compress_both(model_cls, shape):
    data = [(torch.randn(8, *shape[1:]), torch.zeros(8, dtype=torch.long))]
    ctrls = []
    for extra in ({}, {"target_runtime": "onnxruntime"}):
        torch.manual_seed(0)
        config = NNCFConfig.from_dict(
            {"input_info": {"sample_size": list(shape)}, "compression": {"algorithm": "quantization"}, **extra}
        )
        register_default_init_args(config, data, criterion=nn.CrossEntropyLoss())
        ctrls.append(create_compressed_model(model_cls(), config, dump_graphs=False)[0])
    return ctrls


def test_onnxruntime_target_quantizes_split_halves(tmp_path):
    plain, ort = compress_both(ShuffleBlock, (1, 3, 8, 8))
    added = quantized_outputs(ort) - quantized_outputs(plain)
    assert any(a.endswith("__getitem___1") for a in added)  # the half the branch conv reads
    fused_plain = optimized_ops(plain.export_model(tmp_path / "plain.onnx"), tmp_path)
    fused_ort = optimized_ops(ort.export_model(tmp_path / "ort.onnx"), tmp_path)
    # the branch conv (reads a half) and the conv behind the shuffle; the stem, read only by chunk,
    # stays FP32 (in ShuffleNetV2 every chunk reads a shuffled concat, quantized already: 56 of 56 fuse)
    assert fused_ort["QLinearConv"] == fused_plain["QLinearConv"] + 2


def test_onnxruntime_target_quantizes_feature_map_layernorm_inputs(tmp_path):
    plain, ort = compress_both(ConvNeXtBlock, (1, 3, 8, 8))
    added = quantized_outputs(ort) - quantized_outputs(plain)
    assert sorted(a.rsplit("/", 1)[-1] for a in added) == ["conv2d_0"]  # the depthwise conv's output
    assert "Conv2d[dw]" in next(iter(added))
    fused_plain = optimized_ops(plain.export_model(tmp_path / "plain.onnx"), tmp_path)
    fused_ort = optimized_ops(ort.export_model(tmp_path / "ort.onnx"), tmp_path)
    assert fused_ort["QLinearConv"] == fused_plain["QLinearConv"] + 1

    # the token LayerNorm's input is not quantized; the residual sum before it is left FP32 too
    # (test_residual_sums.py): only the Linears' inputs are
    seq_plain, seq_ort = compress_both(SequenceNorm, (1, 5, 8))
    assert quantized_outputs(seq_plain) - quantized_outputs(seq_ort) == {"SequenceNorm/Linear[a]/linear_0"}
    assert quantized_outputs(seq_ort) == {"/nncf_model_input_0", "SequenceNorm/LayerNorm[norm]/layer_norm_0"}


class InceptionBlock(nn.Module):
    """GoogLeNet's shape of things: conv branches concatenated; the next block reads the concat with a
    conv and through a max-pool with another."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU())
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.c = nn.Conv2d(16, 4, 1)
        self.d = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), self.b(x)], 1)
        return torch.cat([self.c(y), self.d(self.pool(y))], 1).mean((2, 3))


def test_onnxruntime_target_quantizes_concat_outputs(tmp_path):
    plain, ort = compress_both(InceptionBlock, (1, 3, 8, 8))
    added = quantized_outputs(ort) - quantized_outputs(plain)
    assert any(a.endswith("/cat_0") for a in added)
    fused_plain = optimized_ops(plain.export_model(tmp_path / "plain.onnx"), tmp_path)
    fused_ort = optimized_ops(ort.export_model(tmp_path / "ort.onnx"), tmp_path)
    assert fused_plain["MaxPool"] + fused_plain["Concat"] > 0  # FP32 between a dequantize and a quantize
    assert fused_ort["QLinearConcat"] == 2 and fused_ort["NhwcMaxPool"] == 1  # on int8
    assert fused_ort["MaxPool"] + fused_ort["Concat"] == 0


def test_onnxruntime_target_gives_a_concat_and_its_branches_one_scale(tmp_path):
    """As NNCF unifies a concat's inputs: with the branches and the output on one grid, QLinearConcat
    copies bytes; with a scale each it requantizes every input (SqueezeNet ran 1.53x of FP32 speed
    that way against 1.84x with NNCF's placement and the same kernels)."""
    _, ort = compress_both(InceptionBlock, (1, 3, 8, 8))
    optimized_ops(ort.export_model(tmp_path / "ort.onnx"), tmp_path)
    graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    concats = [n for n in graph.node if n.op_type == "QLinearConcat"]
    assert len(concats) == 2
    for concat in concats:  # inputs: output scale, output zero point, then (tensor, scale, zero point) per input
        scales = [values[concat.input[i]] for i in (0, *range(3, len(concat.input), 3))]
        zero_points = [values[concat.input[i]] for i in (1, *range(4, len(concat.input), 3))]
        assert all(s == scales[0] for s in scales) and all(z == zero_points[0] for z in zero_points)


class PoolThenInception(nn.Module):
    """GoogLeNet between stages: a max-pool read by a conv and by the next block's pooling branch."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.branch_pool = nn.MaxPool2d(3, 1, padding=1, ceil_mode=True)
        self.a = nn.Conv2d(8, 4, 1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        return torch.cat([self.a(x), self.b(self.branch_pool(x))], 1).mean((2, 3))


def test_onnxruntime_target_runs_chained_max_pools_on_int8(tmp_path):
    """onnxruntime runs DequantizeLinear -> MaxPool -> QuantizeLinear on int8 only when the
    QuantizeLinear is the pool's sole reader; a pool that also feeds a second pool is quantized again
    before it (GoogLeNet: 6 of its 13 pools ran in FP32, quantize_static's file runs all 13 on int8)."""
    plain, ort = compress_both(PoolThenInception, (1, 3, 16, 16))
    fused_plain = optimized_ops(plain.export_model(tmp_path / "plain.onnx"), tmp_path)
    fused_ort = optimized_ops(ort.export_model(tmp_path / "ort.onnx"), tmp_path)  # parity-checked
    assert fused_plain["MaxPool"] > 0
    assert fused_ort["NhwcMaxPool"] == 2 and fused_ort["MaxPool"] == 0
    assert fused_ort["QLinearConv"] == 3


def test_onnxruntime_target_runs_shufflenet_channel_shuffle_on_int8(tmp_path):
    """torchvision's channel shuffle reads `x.size()` from each block's concat, and onnxruntime fuses a
    concat into QLinearConcat only when a QuantizeLinear is its sole reader. The shape reads take the
    quantized concat and the next block's split halves share its quantizer, so the concat, the shuffle's
    reshape / transpose and the split run on int8 between QLinearConvs (before: every concat in FP32
    between dequantizes and a quantize). The export's shape reads take the int8 tensor, so onnxruntime
    does not dequantize a concat just to read its shape, as it does in quantize_static's file."""
    from squeezer.examples.zoo import build

    torch.manual_seed(0)
    model = build("shufflenet_v2_x0_5")
    blocks = sum(type(m).__name__ == "InvertedResidual" for m in model.modules())  # one concat each
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 3, 64, 64]},
            "target_runtime": "onnxruntime",
            "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 8}}},
        }
    )
    register_default_init_args(
        config, [(torch.rand(8, 3, 64, 64), torch.zeros(8, dtype=torch.long))], criterion=nn.CrossEntropyLoss()
    )
    ctrl, _ = create_compressed_model(model, config, dump_graphs=False)
    ops = optimized_ops(ctrl.export_model(tmp_path / "shufflenet.onnx"), tmp_path)  # parity-checked
    assert ops["Conv"] + ops["FusedConv"] == 0 and ops["QLinearConv"] == 56
    assert blocks == 16 and ops["QLinearConcat"] == blocks
    assert ops["QuantizeLinear"] == 2  # the model's input and the classifier's, none after an FP32 op

    optimized = onnx.load(str(tmp_path / "optimized.onnx")).graph  # written by optimized_ops
    concat_outputs = {o for n in optimized.node if n.op_type == "QLinearConcat" for o in n.output}
    dequantized = [n for n in optimized.node if n.op_type == "DequantizeLinear" and n.input[0] in concat_outputs]
    assert len(dequantized) == 0  # quantize_static's file: 60 DequantizeLinear of concats, each read by a Shape


def test_a_stripped_model_stores_concat_inputs_as_the_compressed_one_does(tmp_path):
    plain, _ = _dense_block_ctrls()
    stripped = plain.strip_model(copy.deepcopy(plain.model))
    path = export_onnx(stripped, tmp_path / "stripped.onnx", (torch.randn(2, 3, 8, 8),))
    assert _concat_input_types(path) == [onnx.TensorProto.INT8] * 2
