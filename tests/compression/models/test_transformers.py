"""Real architectures (Hugging Face transformers, random init, small configs) through the library:
token-id inputs with an attention mask, ModelOutput results, a training step, strip and export."""

from __future__ import annotations

import warnings

import onnx
import torch
from torch import fx, nn
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from squeezer import NNCFConfig, create_compressed_model
from squeezer.compression.graph.lift import Addmm
from squeezer.compression.quantization.algorithm import weight_quantizer_of
from tests.compression.export.test_export import optimized_ops

TOKENS = [
    {"sample_size": [1, 8], "type": "long", "keyword": "input_ids"},
    {"sample_size": [1, 8], "type": "long", "keyword": "attention_mask", "filler": "ones"},
]


def int8(input_info, **initializer):
    return NNCFConfig.from_dict(
        {
            "input_info": input_info,
            "compression": {
                "algorithm": "quantization",
                "initializer": {"range": {"num_init_samples": 0}, **initializer},
            },
        }
    )


def token_batch(n=4):
    mask = torch.ones(n, 8, dtype=torch.long)
    mask[0, 6:] = 0  # padding: the mask is used, not a constant
    return {"input_ids": torch.randint(0, 100, (n, 8)), "attention_mask": mask}


def matmuls_with_quantized_activations(graph: onnx.GraphProto, op: str = "MatMul") -> list[str]:
    """MatMul (or Gemm) nodes whose activation input comes from a DequantizeLinear (their weight input does too,
    behind the Transpose torch writes for a Linear on a 3-d input), directly or through the Transposes and
    Reshapes that both runtimes carry a dequantization through (a multi-head output, GPT-2's 2-d views)."""
    producer = {out: node for node in graph.node for out in node.output}

    def dequantized(name: str) -> bool:
        node = producer.get(name)
        while node is not None and node.op_type in ("Transpose", "Reshape"):
            node = producer.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    return [n.name for n in graph.node if n.op_type == op and all(dequantized(i) for i in n.input[:2])]


def test_bert_is_captured_with_torch_export_trains_on_any_batch_strips_and_exports(tmp_path):
    """torch.fx cannot trace Hugging Face's BERT (it slices by tensor sizes): the library captures it with
    torch.export instead, so activations and attention MatMuls are quantized, not only weights."""
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100, num_labels=3
    )
    model = BertForSequenceClassification(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "only weights are quantized" fallback any more
        ctrl, compressed = create_compressed_model(model, int8(TOKENS), dump_graphs=False)
    assert isinstance(compressed, fx.GraphModule)
    assert len(ctrl.setup.activations) >= 10
    linears = [m for m in compressed.modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    assert linears and all(weight_quantizer_of(m) is not None for m in linears)
    assert set(model.state_dict()) <= {
        k.replace(".parametrizations.weight.original", ".weight") for k in compressed.state_dict()
    }
    compressed.train()
    out = compressed(**token_batch(5))  # captured at batch 2: the batch dimension stayed dynamic
    out.logits.sum().backward()  # a ModelOutput, as from the original model
    assert out.logits.shape == (5, 3)
    query = compressed.get_submodule("bert.encoder.layer.0.attention.self.query")  # the original names
    assert query.parametrizations.weight.original.grad is not None
    compressed.eval()
    path = ctrl.export_model(tmp_path / "bert.onnx")  # verified against torch in onnxruntime
    exported = onnx.load(str(path))
    assert exported.opset_import[0].version == 14  # scaled_dot_product_attention
    assert [i.name for i in exported.graph.input] == ["input.0", "input.1"]
    assert len(matmuls_with_quantized_activations(exported.graph)) == 12  # q, k, v, out, 2 FFN in both layers
    assert optimized_ops(path, tmp_path)["MatMulIntegerToFloat"] == 12  # and onnxruntime runs each on int8
    stripped = ctrl.strip()
    assert stripped.eval()(**token_batch()).logits.shape == (4, 3)


def test_gpt2_projections_are_quantized_layers_and_export(tmp_path):
    """GPT-2's Conv1D projections (weight stored (in, out)) become lifted `Addmm` layers with per-output
    channel weight quantizers, and the model exports (fx's weights-only path could not: aten::diff)."""
    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, use_cache=False, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    ctrl, compressed = create_compressed_model(model, int8(TOKENS), dump_graphs=False)
    projections = [m for m in compressed.modules() if isinstance(m, Addmm)]
    assert len(projections) == 8  # c_attn, c_proj, mlp.c_fc, mlp.c_proj per block
    assert isinstance(model.transformer.h[0].attn.c_attn, Conv1D)
    assert compressed.get_submodule("transformer.h.0.attn.c_attn") in projections  # same names as the original
    quantizers = [weight_quantizer_of(m) for m in projections]
    assert all(q is not None and q.spec.scale_shape == (1, m.nf) for q, m in zip(quantizers, projections, strict=True))
    compressed.train()
    compressed(**token_batch()).logits.sum().backward()
    assert projections[0].parametrizations.weight.original.grad is not None
    compressed.eval()
    exported = onnx.load(str(ctrl.export_model(tmp_path / "gpt2.onnx")))  # verified in onnxruntime
    assert len(matmuls_with_quantized_activations(exported.graph, op="Gemm")) == 8  # torch.addmm


class TinyViTBlock(nn.Module):
    """torchvision's ViT encoder block: nn.MultiheadAttention between LayerNorms."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(12, 16)
        self.ln = nn.LayerNorm(16)
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln(self.embed(x))
        x, _ = self.attention(x, x, x, need_weights=False)
        return self.head(x.mean(1))


def test_multihead_attention_projections_are_quantized_and_nothing_is_named_fp32(tmp_path, caplog):
    torch.manual_seed(0)
    with caplog.at_level("WARNING", logger="squeezer.compression.quantization.algorithm"):
        ctrl, compressed = create_compressed_model(TinyViTBlock(), int8({"sample_size": [1, 5, 12]}), dump_graphs=False)
    assert "stay FP32" not in caplog.text
    assert weight_quantizer_of(compressed.attention, "in_proj_weight") is not None
    assert weight_quantizer_of(compressed.attention.out_proj) is not None
    compressed.train()
    compressed(torch.rand(4, 5, 12)).sum().backward()
    assert compressed.attention.parametrizations.in_proj_weight[0].scale.grad is not None
    assert compressed.attention.out_proj.parametrizations.weight[0].scale.grad is not None
    ctrl.export_model(tmp_path / "vit_block.onnx")  # verified in onnxruntime


class BareMatrix(nn.Module):
    """A weight matrix no layer owns: F.linear with a bare nn.Parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Parameter(torch.randn(8, 12))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.linear(x, self.proj))


def test_a_matrix_no_layer_owns_is_named_as_fp32(caplog):
    with caplog.at_level("WARNING", logger="squeezer.compression.quantization.algorithm"):
        create_compressed_model(BareMatrix(), int8({"sample_size": [1, 12]}), dump_graphs=False)
    assert "1 weight matrices are not owned by a layer Squeezer quantizes and stay FP32: proj" in caplog.text
