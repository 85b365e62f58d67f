"""The export gate on deep nets whose INT8 output float rounding alone moves far (random init): it
accepts the correct file and still rejects a wrong one."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.compression.export.onnx_export import (
    ActivationQDQ,
    build_export_model,
    parity_bound,
    rounding_noise,
    verify_onnx,
)
from squeezer.errors import ExportError
from tests.compression.export.test_export import compress


def test_noise_of_a_small_model_keeps_the_plain_bound(trained_cnn, digits32):
    """A shallow net barely moves under rounding noise: the gate stays at rtol of the output."""
    _, model = compress(trained_cnn[0], digits32[0])
    export = build_export_model(model)
    x = torch.rand(8, 1, 32, 32)
    with torch.no_grad():
        before = export(x)
    (noise,) = rounding_noise(export, (x,))
    magnitude = float(before.abs().max())
    assert noise < 0.05 * magnitude / 2  # so parity_bound is rtol * magnitude
    assert parity_bound(before.numpy(), 0.05, noise) == pytest.approx(0.05 * magnitude + 1e-4)
    assert all(m.jitter == 0.0 for m in export.modules() if isinstance(m, ActivationQDQ))
    with torch.no_grad():
        assert torch.equal(export(x), before)  # the jitter is off again


def _middle_conv_weight_scale(graph: onnx.GraphProto) -> onnx.TensorProto:
    """The weight scale initializer of the conv halfway through the network."""
    producer = {out: node for node in graph.node for out in node.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    dq = producer[convs[len(convs) // 2].input[1]]
    return next(i for i in graph.initializer if i.name == dq.input[1])


@pytest.mark.slow
def test_random_resnet18_passes_the_gate_and_a_wrong_layer_still_fails(tmp_path):
    """Before: 'onnxruntime output 0 differs ... largest difference 0.0216 (allowed 0.0184)' for the
    zoo's random-init ResNet-18 after two QAT steps, although nothing in the file was wrong."""
    from squeezer.examples.zoo import ZOO, build
    from squeezer.examples.zoo_check import calibrate_batchnorm

    torch.manual_seed(0)
    spec = ZOO["resnet18"]
    model = calibrate_batchnorm(build("resnet18"), spec)
    x = spec.example_input(4)
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, *spec.input_shape[1:]]}, "compression": {"algorithm": "quantization"}}
    )
    labels = torch.randint(0, spec.num_outputs, (4,))
    data = [(spec.example_input(4, seed=s), labels) for s in range(2)]
    register_default_init_args(config, data, criterion=nn.CrossEntropyLoss())
    ctrl, compressed = create_compressed_model(model, config, dump_graphs=False)
    optimizer = torch.optim.SGD(compressed.parameters(), lr=1e-3)
    compressed.train()
    for xb, yb in data:
        loss = nn.functional.cross_entropy(compressed(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(compressed.parameters(), 1.0)
        optimizer.step()
    compressed.eval()
    path = ctrl.export_model(tmp_path / "resnet18.onnx")  # raised ExportError before

    export = build_export_model(ctrl.export_source(copy.deepcopy(compressed)))
    (noise,) = rounding_noise(export, (x,))
    with torch.no_grad():
        magnitude = float(compressed(x).abs().max())
    assert noise > 0.01 * magnitude  # this model is sensitive to rounding: the reason for the wider gate
    assert verify_onnx(compressed, path, (x,), ["input.0"], rtol=0.05, noise=[noise]) <= 2 * noise + 0.05 * magnitude

    # one mid-network conv computes with a 25% larger weight scale: the gate still says no
    graph = onnx.load(str(path))
    scale = _middle_conv_weight_scale(graph.graph)
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(1.25), scale.name))
    wrong = tmp_path / "wrong.onnx"
    onnx.save(graph, str(wrong))
    with pytest.raises(ExportError, match="float rounding alone moves it by"):
        verify_onnx(compressed, wrong, (x,), ["input.0"], rtol=0.05, noise=[noise])
