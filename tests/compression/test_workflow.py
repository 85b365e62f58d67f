"""The NNCF seed workflow end to end, on real digits data, across a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeezer import CompressionStage, NNCFConfig, create_compressed_model, load_state, register_default_init_args
from squeezer.examples.digits import accuracy

CONFIG = """{
    // a config as users write them: comments allowed
    "input_info": {"sample_size": [1, 1, 32, 32]},
    "compression": {
        "algorithm": "quantization",
        "initializer": {"range": {"num_init_samples": 256, "type": "mean_min_max"},
                        "batchnorm_adaptation": {"num_bn_adaptation_samples": 512}}
    }
}"""


@pytest.mark.slow
def test_seed_workflow(tmp_path, digits32, trained_cnn):
    train, val = digits32
    fp32, fp32_acc = trained_cnn
    config_path = tmp_path / "int8.json"
    config_path.write_text(CONFIG)
    config = NNCFConfig.from_json(config_path)
    config["log_dir"] = str(tmp_path)
    config = register_default_init_args(config, train, criterion=nn.CrossEntropyLoss())
    ctrl, model = create_compressed_model(fp32, config)
    assert (tmp_path / "original_graph.dot").exists() and (tmp_path / "compressed_graph.dot").exists()

    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _epoch in range(2):
        ctrl.scheduler.epoch_step()
        model.train()
        for x, y in train:
            ctrl.scheduler.step()
            loss = F.cross_entropy(model(x), y) + ctrl.loss()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert ctrl.scheduler.current_epoch == 1
    assert ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED
    stats = ctrl.statistics()
    assert stats.quantization["activation_quantizers"]["total"] == 14
    assert "weight_quantizers.total" in stats.to_str()
    qat_acc = accuracy(model, val)
    assert qat_acc >= fp32_acc - 2.0, (qat_acc, fp32_acc)

    # save as users do, then rebuild in a fresh process
    state = ctrl.get_compression_state()
    json.dumps(state)  # must be JSON-serializable
    x_val = next(iter(val))[0]
    model.eval()
    with torch.no_grad():
        expected = model(x_val)
    torch.save({"state_dict": model.state_dict(), "compression_state": state}, tmp_path / "ckpt.pt")
    torch.save({"x": x_val, "expected": expected}, tmp_path / "check.pt")
    script = textwrap.dedent(f"""
        import torch
        from squeezer import NNCFConfig, create_compressed_model, load_state
        from squeezer.examples.models import ResidualCNN
        ckpt = torch.load({str(tmp_path / "ckpt.pt")!r})
        check = torch.load({str(tmp_path / "check.pt")!r})
        config = NNCFConfig.from_json({str(config_path)!r})
        config["log_dir"] = {str(tmp_path / "resume")!r}
        ctrl, model = create_compressed_model(ResidualCNN(), config, compression_state=ckpt["compression_state"])
        loaded = load_state(model, ckpt["state_dict"], is_resume=True)
        model.eval()
        with torch.no_grad():
            out = model(check["x"])
        assert torch.equal(out, check["expected"]), (out - check["expected"]).abs().max()
        assert ctrl.scheduler.current_epoch == 1
        print("REBUILT", loaded)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "REBUILT" in result.stdout

    # export, then compare accuracy in onnxruntime with torch's
    onnx_path = ctrl.export_model(tmp_path / "model.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    correct = total = 0
    for x, y in val:
        logits = session.run(None, {"input.0": x.numpy()})[0]
        correct += int((np.argmax(logits, 1) == y.numpy()).sum())
        total += len(y)
    ort_acc = 100.0 * correct / total
    assert abs(ort_acc - qat_acc) <= 0.5, (ort_acc, qat_acc)


def test_load_state_matches_prefixes_and_is_strict_on_resume(trained_cnn):
    from squeezer.errors import StateError

    fp32, _ = trained_cnn
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 1, 32, 32]}, "compression": {"algorithm": "quantization"}}
    )
    _, model = create_compressed_model(fp32, config, dump_graphs=False)
    # an uncompressed checkpoint saved from DataParallel ("module." prefix) loads into the compressed model
    plain = {f"module.{k}": v for k, v in fp32.state_dict().items()}
    loaded = load_state(model, plain, is_resume=False)
    assert loaded == len(plain)
    torch.testing.assert_close(model.state_dict()["stem.0.parametrizations.weight.original"], fp32.stem[0].weight)
    with pytest.raises(StateError, match=r"missing keys: .*activation_quantizers"):
        load_state(model, plain, is_resume=True)
    with pytest.raises(
        StateError, match=r"parameters: size mismatch: \['fc.bias: checkpoint \(3,\) vs model \(10,\)'\]$"
    ):
        load_state(model, {**model.state_dict(), "fc.bias": torch.zeros(3)}, is_resume=True)
    with pytest.raises(StateError, match="unexpected keys: \\['extra'\\]"):
        load_state(model, {**model.state_dict(), "extra": torch.zeros(1)}, is_resume=True)
    assert load_state(model, model.state_dict(), is_resume=True) == len(model.state_dict())


def test_create_leaves_the_users_model_untouched(trained_cnn):
    fp32, _ = trained_cnn
    before = {k: v.clone() for k, v in fp32.state_dict().items()}
    x = torch.rand(2, 1, 32, 32)
    fp32.eval()
    with torch.no_grad():
        reference = fp32(x)
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 1, 32, 32]}, "compression": {"algorithm": "quantization"}}
    )
    create_compressed_model(fp32, config, dump_graphs=False)
    assert all(torch.equal(before[k], v) for k, v in fp32.state_dict().items())
    with torch.no_grad():
        assert torch.equal(fp32(x), reference)
