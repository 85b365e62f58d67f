"""The job's OpenVINO IR output: converted from the job's verified ONNX, checked against the compressed
model; a model OpenVINO does not reproduce leaves the job without the IR and with a warning."""

from __future__ import annotations

import zipfile

import torch
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.compression.export.openvino_export import import_openvino, read_ir_archive
from squeezer.examples.models import MLP
from squeezer.worker.outputs import openvino_ir


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
