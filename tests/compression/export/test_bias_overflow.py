"""A layer whose input activations are tiny: its bias in units of (input scale x weight scale) does not
fit int32, so it stays a float bias instead of a saturated int32 one."""

from __future__ import annotations

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args


class TinyFeatures(nn.Module):
    """Features of ~1e-9 (a random deep net's last block) into a classifier with an ordinary bias."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.features(x)) * 1e-9)


def test_bias_that_overflows_int32_stays_float_and_the_export_matches(tmp_path):
    torch.manual_seed(0)
    config = NNCFConfig.from_dict({"input_info": {"sample_size": [1, 8]}, "compression": {"algorithm": "quantization"}})
    register_default_init_args(config, [(torch.randn(16, 8), torch.zeros(16, dtype=torch.long))])
    ctrl, _ = create_compressed_model(TinyFeatures(), config, dump_graphs=False)
    # before: fc.bias_int32 saturated at +-2**31 and onnxruntime's output was the bias's clip, not the model's
    path = ctrl.export_model(tmp_path / "m.onnx")  # verified against torch in onnxruntime
    initializers = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    assert "fc.bias_int32" not in initializers and "fc.bias" in initializers
    assert "features.bias_int32" in initializers  # ordinary layers keep int32 biases
