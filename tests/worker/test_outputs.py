"""The job's OpenVINO IR output: converted from the job's verified ONNX, checked against the compressed
model; a model OpenVINO does not reproduce leaves the job without the IR and with a warning."""

from __future__ import annotations

import zipfile

import torch
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.compression.export.openvino_export import import_openvino, read_ir_archive
from squeezer.examples.models import MLP
from squeezer.worker.outputs import openvino_ir, plain_state_dict


def _int8_mlp_onnx(tmp_path):
    torch.manual_seed(0)
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 64]}, "compression": {"algorithm": "quantization"}}
    )
    register_default_init_args(
        config, [(torch.rand(16, 64), torch.zeros(16, dtype=torch.long))], criterion=nn.CrossEntropyLoss()
    )
    ctrl, model = create_compressed_model(MLP(hidden=32).eval(), config, dump_graphs=False)
    return model, ctrl.export_model(tmp_path / "model.onnx")


def test_the_ir_archive_holds_what_the_compressed_model_computes(tmp_path):
    model, onnx_path = _int8_mlp_onnx(tmp_path)
    warnings = []
    sample = torch.rand(8, 64)
    archive = openvino_ir(model, onnx_path, sample, tmp_path, warnings)
    assert archive == tmp_path / "model_openvino.zip" and warnings == []
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["model.bin", "model.xml"]
    assert not (tmp_path / "openvino_ir").exists()  # the loose files went into the archive
    compiled = import_openvino().Core().compile_model(read_ir_archive(archive), "CPU")
    with torch.no_grad():
        expected = model.eval()(sample)
    actual = torch.from_numpy(compiled(sample.numpy())[compiled.outputs[0]])
    torch.testing.assert_close(actual, expected, atol=0.05 * float(expected.abs().max()) + 1e-4, rtol=0)


def test_an_ir_that_does_not_reproduce_the_model_is_left_out_with_a_warning(tmp_path):
    model, onnx_path = _int8_mlp_onnx(tmp_path)
    with torch.no_grad():
        model.head.bias += 3.0  # the ONNX file no longer matches this model
    warnings = []
    assert openvino_ir(model, onnx_path, torch.rand(8, 64), tmp_path, warnings) is None
    assert len(warnings) == 1 and warnings[0].startswith(
        "no OpenVINO IR: OpenVINO output 0 differs from the torch model"
    )
    assert not (tmp_path / "model_openvino.zip").exists() and not (tmp_path / "openvino_ir").exists()


class _SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(x, x, x, need_weights=False)[0].mean(1))


def test_the_plain_state_dict_carries_the_quantized_attention_in_projection():
    """The stripped download loads into the user's own class, with in_proj_weight on its int8 grid."""
    torch.manual_seed(0)
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 5, 16]}, "compression": {"algorithm": "quantization"}}
    )
    register_default_init_args(config, [(torch.randn(8, 5, 16), torch.zeros(8, dtype=torch.long))])
    original = _SelfAttention()
    keys = set(original.state_dict())
    fp32 = original.attention.in_proj_weight.detach().clone()
    ctrl, compressed = create_compressed_model(original, config, dump_graphs=False)
    with torch.no_grad():
        quantized = compressed.attention.in_proj_weight.clone()
    plain = plain_state_dict(ctrl.strip(), keys)
    assert set(plain) == keys
    assert torch.allclose(plain["attention.in_proj_weight"], quantized, rtol=0, atol=1e-7)
    assert not torch.equal(plain["attention.in_proj_weight"], fp32)
    user_model = _SelfAttention()
    user_model.load_state_dict(plain)  # strict: every key of the user's class is there
