"""nn.MultiheadAttention in INT8: its in-projection matrices (the packed in_proj_weight, or q/k/v_proj_weight)
get weight quantizers like any layer's, its input an activation quantizer; both survive a state round trip
and strip(), and the export stores them as int8 that onnxruntime runs as an integer matmul."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.ao.quantization import FakeQuantize

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.compression.graph.surgery import original_class
from squeezer.compression.quantization.algorithm import weight_quantizer_of
from squeezer.examples.zoo import ZOO, build

MHA_ID = "AttentionBlock/MultiheadAttention[attention]/multihead_attention_0"
INTEGER_MATMULS = ("MatMulIntegerToFloat", "QLinearMatMul", "QGemm")
E, SEQ = 16, 5


class AttentionBlock(nn.Module):
    """torchvision's ViT encoder block in small: self-attention between a LayerNorm and a head."""

    def __init__(self, kdim: int | None = None) -> None:
        super().__init__()
        self.embed = nn.Linear(12, E)
        self.ln = nn.LayerNorm(E)
        self.attention = nn.MultiheadAttention(E, 2, batch_first=True, kdim=kdim, vdim=kdim)
        self.memory = nn.Linear(12, kdim) if kdim else None
        self.head = nn.Linear(E, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(self.embed(x))
        if self.memory is None:
            h, _ = self.attention(h, h, h, need_weights=False)
        else:  # cross-attention to a memory of another width: separate q/k/v_proj_weight
            memory = self.memory(x)
            h, _ = self.attention(query=h, key=memory, value=memory, need_weights=False)
        return self.head(h.mean(1))


def _config(log_dir: str = ".", **compression) -> NNCFConfig:
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, SEQ, 12]},
            "log_dir": log_dir,
            "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 16}}},
        }
    )
    config["compression"].update(compression)
    generator = torch.Generator().manual_seed(1)
    register_default_init_args(
        config,
        [(torch.randn(8, SEQ, 12, generator=generator), torch.randint(0, 3, (8,), generator=generator))] * 2,
        criterion=nn.CrossEntropyLoss(),
    )
    return config


def _compress(model: nn.Module | None = None, log_dir: str = ".", **compression):
    torch.manual_seed(0)
    return create_compressed_model(model or AttentionBlock(), _config(log_dir, **compression), dump_graphs=False)


def _on_grid(value: torch.Tensor, quantizer) -> bool:
    step, zero_point, qmin, qmax = quantizer.qparams()
    levels = value.detach() / step.reshape(-1, 1) + zero_point.reshape(-1, 1)
    on_levels = torch.allclose(levels, levels.round(), atol=1e-3)
    return on_levels and qmin <= int(levels.round().min()) and int(levels.round().max()) <= qmax


def _optimized_matmuls(path, tmp_path) -> list[onnx.NodeProto]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
    return [n for n in graph.node if n.op_type in (*INTEGER_MATMULS, "MatMul", "FusedMatMul", "Gemm")]


def test_in_proj_weight_gets_a_per_row_quantizer_on_an_int8_grid(caplog):
    with caplog.at_level("WARNING", logger="squeezer.compression.quantization.algorithm"):
        ctrl, compressed = _compress()
    assert "stay FP32" not in caplog.text  # nothing is left out any more
    quantizer = weight_quantizer_of(compressed.attention, "in_proj_weight")
    assert quantizer is not None and quantizer is ctrl.weight_quantizers[f"{MHA_ID}/linear_0|WEIGHT"]
    assert quantizer.spec.per_channel and quantizer.spec.scale_shape == (3 * E, 1)  # one step per output row
    original = compressed.attention.parametrizations.in_proj_weight.original
    quantized = compressed.attention.in_proj_weight
    assert _on_grid(quantized, quantizer) and not torch.equal(quantized, original)
    assert weight_quantizer_of(compressed.attention.out_proj) is not None
    # the attention's input is quantized once, for query, key and value alike
    readers = [p for p in ctrl.setup.activations if f"{MHA_ID}" in p.consumers]
    assert [p.producers for p in readers] == [["AttentionBlock/LayerNorm[ln]/layer_norm_0"]]
    compressed.train()
    compressed(torch.randn(4, SEQ, 12)).sum().backward()
    assert original.grad is not None and quantizer.scale.grad is not None  # trainable as any layer's weight


def test_separate_q_k_v_projections_are_quantized_and_export(tmp_path):
    ctrl, compressed = _compress(AttentionBlock(kdim=8))
    for k, tensor in enumerate(("q_proj_weight", "k_proj_weight", "v_proj_weight")):
        quantizer = weight_quantizer_of(compressed.attention, tensor)
        assert quantizer is ctrl.weight_quantizers[f"{MHA_ID}/linear_{k}|WEIGHT"]
        assert _on_grid(getattr(compressed.attention, tensor), quantizer)
    # key and value passed by keyword are quantized too: the memory feeds two in-projections
    assert any("AttentionBlock/Linear[memory]/linear_0" in p.producers for p in ctrl.setup.activations)
    graph = onnx.load(str(ctrl.export_model(tmp_path / "cross.onnx"))).graph  # verified in onnxruntime
    int8 = {i.name: tuple(i.dims) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    for tensor, shape in (("q_proj_weight", (E, E)), ("k_proj_weight", (8, E)), ("v_proj_weight", (8, E))):
        assert int8[f"attention.{tensor}_quantized"] == shape  # stored transposed for the MatMul


def test_state_round_trip_restores_the_in_proj_quantizer():
    ctrl, compressed = _compress()
    state = json.loads(json.dumps(ctrl.get_compression_state()))
    saved = compressed.state_dict()
    torch.manual_seed(5)  # another init: everything must come from the state
    resumed_ctrl, resumed = create_compressed_model(
        AttentionBlock(), _config(), compression_state=state, dump_graphs=False
    )
    resumed.load_state_dict(saved)
    quantizer = weight_quantizer_of(resumed.attention, "in_proj_weight")
    assert quantizer is resumed_ctrl.weight_quantizers[f"{MHA_ID}/linear_0|WEIGHT"]
    assert torch.equal(quantizer.scale, weight_quantizer_of(compressed.attention, "in_proj_weight").scale)
    x = torch.randn(2, SEQ, 12)
    compressed.eval(), resumed.eval()
    assert torch.equal(resumed(x), compressed(x))


def test_strip_gives_a_plain_attention_with_the_quantized_in_proj_weight():
    ctrl, compressed = _compress()
    compressed.eval()
    x = torch.randn(2, SEQ, 12)
    with torch.no_grad():
        expected, quantized = compressed(x), compressed.attention.in_proj_weight.clone()
    stripped = ctrl.strip()
    attention = stripped.attention
    assert original_class(attention) is nn.MultiheadAttention
    assert [type(p) for p in attention.parametrizations.in_proj_weight] == [FakeQuantize]  # frozen, torch-only
    assert torch.equal(attention.parametrizations.in_proj_weight.original, quantized)  # stored on the grid
    assert torch.allclose(attention.in_proj_weight, quantized, rtol=0, atol=1e-7)  # FakeQuantize keeps it there
    with torch.no_grad():
        assert torch.allclose(stripped(x), expected, atol=1e-6)


def test_bitwidth_per_scope_and_ignored_scopes_address_the_attention():
    precision = {"type": "manual", "bitwidth_per_scope": [[4, f"{MHA_ID}/linear_0"]]}
    ctrl, compressed = _compress(initializer={"range": {"num_init_samples": 16}, "precision": precision})
    assert weight_quantizer_of(compressed.attention, "in_proj_weight").spec.num_bits == 4
    assert weight_quantizer_of(compressed.attention.out_proj).spec.num_bits == 8
    ctrl, compressed = _compress(ignored_scopes=[MHA_ID])
    assert weight_quantizer_of(compressed.attention, "in_proj_weight") is None
    assert not any(MHA_ID in p.consumers for p in ctrl.setup.activations)


def test_hawq_measures_the_in_projection_like_a_layer(tmp_path):
    precision = {"type": "hawq", "num_data_points": 16, "iter_number": 8, "compression_ratio": 1.1}
    ctrl, _ = _compress(log_dir=str(tmp_path), initializer={"range": {"num_init_samples": 16}, "precision": precision})
    layers = {layer["id"]: layer for layer in ctrl.builder_state["precision_init"]["layers"]}
    in_proj = layers[f"{MHA_ID}/linear_0|WEIGHT"]
    assert (in_proj["module"], in_proj["tensor"]) == ("attention", "in_proj_weight")
    assert in_proj["macs"] == 3 * E * E * SEQ  # applied at every token
    assert in_proj["hessian_trace"] != 0  # measured through the attention (double backward reaches it)


def _int8_export_facts(path, tmp_path) -> tuple[dict[str, tuple[int, ...]], list[int], dict[str, str]]:
    """The int8 initializers' shapes, the FP32 initializers' sizes, and the op type of onnxruntime's optimized
    graph that reads each in-projection matrix."""
    graph = onnx.load(str(path)).graph
    int8 = {i.name: tuple(i.dims) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    float_sizes = [int(np.prod(i.dims)) for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    readers = {
        name: n.op_type
        for n in _optimized_matmuls(path, tmp_path)
        for name in n.input
        if "in_proj" in name and name.endswith("_quantized")
    }
    return int8, float_sizes, readers


def test_export_stores_in_proj_as_int8_run_as_an_integer_matmul(tmp_path):
    ctrl, _ = _compress()
    path = ctrl.export_model(tmp_path / "block.onnx")  # the export's onnxruntime parity gate runs here
    int8, float_sizes, readers = _int8_export_facts(path, tmp_path)
    assert int8["attention.in_proj_weight_quantized"] == (E, 3 * E)  # pre-transposed for MatMul
    assert 3 * E * E not in float_sizes  # no FP32 copy of it
    assert readers == {"attention.in_proj_weight_quantized": "MatMulIntegerToFloat"}


def test_vit_tiny_export_runs_every_in_projection_in_integer(tmp_path):
    model = build("vit_tiny")
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision starts it at zero: outputs would all be 0
    shape = ZOO["vit_tiny"].input_shape[1:]
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, *shape]}, "compression": {"algorithm": "quantization"}}
    )
    generator = torch.Generator().manual_seed(0)
    register_default_init_args(config, [(torch.rand(8, *shape, generator=generator), torch.zeros(8).long())] * 2)
    ctrl, compressed = create_compressed_model(model, config, dump_graphs=False)
    path = ctrl.export_model(tmp_path / "vit.onnx")  # verified in onnxruntime
    int8, float_sizes, readers = _int8_export_facts(path, tmp_path)
    layers = [f"encoder.layers.encoder_layer_{i}.self_attention.in_proj_weight_quantized" for i in range(2)]
    hidden = model.hidden_dim
    assert all(int8[name] == (hidden, 3 * hidden) for name in layers)
    assert 3 * hidden * hidden not in float_sizes
    assert readers == dict.fromkeys(layers, "MatMulIntegerToFloat")


def test_untraceable_model_still_quantizes_the_in_projection():
    class Untraceable(AttentionBlock):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if float(x.sum()) > 1e9:  # data-dependent control flow: fx cannot trace it
                return x
            return super().forward(x)

    with pytest.warns(RuntimeWarning, match="could not be traced"):
        ctrl, compressed = _compress(Untraceable())
    quantizer = weight_quantizer_of(compressed.attention, "in_proj_weight")
    assert quantizer is ctrl.weight_quantizers["attention.in_proj_weight|WEIGHT"]
    assert _on_grid(compressed.attention.in_proj_weight, quantizer)
