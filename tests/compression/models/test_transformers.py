"""Real architectures (Hugging Face transformers, random init, small configs) through the library:
token-id inputs with an attention mask, ModelOutput results, a training step, strip and export."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from squeezer import NNCFConfig, create_compressed_model
from squeezer.compression.quantization.algorithm import weight_quantizer_of
from squeezer.errors import ExportError

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


def test_bert_with_token_ids_and_mask_trains_strips_and_exports(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100, num_labels=3
    )
    model = BertForSequenceClassification(config)
    with pytest.warns(RuntimeWarning, match="could not be traced .*only weights are quantized"):
        ctrl, compressed = create_compressed_model(model, int8(TOKENS), dump_graphs=False)
    linears = [m for m in compressed.modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    assert linears and all(weight_quantizer_of(m) is not None for m in linears)
    compressed.train()
    out = compressed(**token_batch())
    out.logits.sum().backward()  # a ModelOutput, as from the original model
    assert compressed.bert.encoder.layer[0].attention.self.query.parametrizations.weight.original.grad is not None
    path = ctrl.export_model(tmp_path / "bert.onnx")  # verified against torch in onnxruntime
    exported = onnx.load(str(path))
    assert exported.opset_import[0].version == 14  # scaled_dot_product_attention
    assert [i.name for i in exported.graph.input] == ["input.0", "input.1"]
    stripped = ctrl.strip()
    assert stripped.eval()(**token_batch()).logits.shape == (4, 3)


def test_gpt2_conv1d_layers_get_weight_quantizers(tmp_path):
    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, use_cache=False, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    with pytest.warns(RuntimeWarning, match="could not be traced"):
        ctrl, compressed = create_compressed_model(model, int8(TOKENS), dump_graphs=False)
    conv1d = [m for m in compressed.modules() if isinstance(m, Conv1D)]
    assert len(conv1d) == 8  # c_attn, c_proj, mlp.c_fc, mlp.c_proj per block
    quantizers = [weight_quantizer_of(m) for m in conv1d]
    assert all(q is not None and q.spec.scale_shape == (1, m.nf) for q, m in zip(quantizers, conv1d, strict=True))
    compressed.train()
    compressed(**token_batch()).logits.sum().backward()
    with pytest.raises(ExportError, match=r"aten::diff.*no ONNX opset up to 20"):
        ctrl.export_model(tmp_path / "gpt2.onnx")  # Hugging Face's mask code uses torch.diff


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


def test_multihead_attention_out_proj_is_quantized_and_in_proj_named_as_fp32(tmp_path, caplog):
    torch.manual_seed(0)
    with caplog.at_level("WARNING", logger="squeezer.compression.quantization.algorithm"):
        ctrl, compressed = create_compressed_model(TinyViTBlock(), int8({"sample_size": [1, 5, 12]}), dump_graphs=False)
    assert "1 weight matrices are not owned by a layer Squeezer quantizes and stay FP32: attention.in_proj_weight" in (
        caplog.text
    )
    assert weight_quantizer_of(compressed.attention.out_proj) is not None
    compressed.train()
    compressed(torch.rand(4, 5, 12)).sum().backward()
    assert compressed.attention.out_proj.parametrizations.weight[0].scale.grad is not None
    ctrl.export_model(tmp_path / "vit_block.onnx")  # verified in onnxruntime
