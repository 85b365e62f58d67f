"""Architectures we did not write, through both ways in: a representative slice of the model zoo
(`make zoo` runs the whole matrix). Each case compresses, trains two steps, exports to ONNX and checks
onnxruntime against the compressed torch model; a failure names the step and the reason."""

from __future__ import annotations

import pytest
import torch

from squeezer.examples.zoo import ZOO, build, import_torchvision
from squeezer.examples.zoo_check import run_case

# each case is here for a failure users hit on that architecture
CI_CASES = [
    ("resnet18", "int8", "service"),  # lifted `out += identity` (aten.add_) after a fake quantizer
    ("mobilenet_v3_small", "int8", "library"),  # in-place Hardswish after a fake quantizer
    ("efficientnet_b0", "int8", "library"),  # in-place SiLU, squeeze-excitation
    ("vit_tiny", "int8", "library"),  # nn.MultiheadAttention weights; SDPA needs opset 14
    ("vit_tiny", "int8", "service"),  # lifted SDPA node names
    ("bert", "int8", "library"),  # int64 token ids, SDPA, dict outputs
    ("bert", "int8", "service"),
    ("shufflenet_v2_x0_5", "pruning", "library"),  # channel shuffle
    ("regnet_x_400mf", "pruning", "library"),  # grouped convs
    ("gpt2", "pruning", "library"),  # tied embedding / LM head, Conv1D
    ("vit_tiny", "pruning", "library"),  # attention projections, LayerNorm: left whole, the rest pruned
    ("swin_tiny", "int8", "service"),  # constants torch.export lifts out of the code
    ("mobilenet_v2", "int8+kd", "service"),
    ("resnet18", "sparsity", "library"),
]


def test_torchvision_imports_beside_cpu_torch():
    tv = import_torchvision()
    model = tv.models.resnet18(weights=None, num_classes=10).eval()
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.slow
def test_every_zoo_model_builds_and_runs():
    """The zoo itself is sound: every architecture builds at its small input and gives its output."""
    for name, spec in ZOO.items():
        with torch.no_grad():
            out = build(name)(spec.example_input(2))
        assert out.shape[0] == 2 and out.shape[-1] == spec.num_outputs, name


@pytest.mark.slow
@pytest.mark.parametrize(("model", "algorithm", "path"), CI_CASES, ids=lambda v: str(v))
def test_zoo_case(model, algorithm, path, tmp_path):
    result = run_case(model, algorithm, path, tmp_path)
    assert result.ok, f"{result.stage}: {result.reason}"
    assert result.parity is not None and result.parity <= 0.05
