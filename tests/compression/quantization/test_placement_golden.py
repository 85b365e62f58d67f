"""The quantizer setups of NNCF's and onnxruntime's placements, pinned: a change to placement that
moves, adds or drops a quantizer (or changes its spec) on these models shows here as a diff. The models
cover each runtime-specific rule: written-out SiLU / Hardswish gates, split halves, concat outputs and
branches, branching max-pools, feature-map LayerNorms and residual sums left FP32.

Regenerate after an intended change: `python -m tests.compression.quantization.test_placement_golden`."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from squeezer import NNCFConfig, create_compressed_model
from squeezer.examples.models import AttentionBlock, DigitsTransformer, MobileNetV2Tiny, ResidualCNN
from tests.compression.quantization.test_target_runtime import (
    ConvNeXtBlock,
    DenseBlock,
    InceptionBlock,
    PoolThenInception,
    SequenceNorm,
    ShuffleBlock,
    SiluBlock,
)

GOLDEN = Path(__file__).parent / "data" / "placement_setups.json"

MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "silu": (SiluBlock, {"sample_size": [1, 3, 16, 16]}),
    "dense": (DenseBlock, {"sample_size": [1, 3, 8, 8]}),
    "shuffle": (ShuffleBlock, {"sample_size": [1, 3, 8, 8]}),
    "inception": (InceptionBlock, {"sample_size": [1, 3, 8, 8]}),
    "pool_inception": (PoolThenInception, {"sample_size": [1, 3, 16, 16]}),
    "convnext": (ConvNeXtBlock, {"sample_size": [1, 3, 8, 8]}),
    "sequence_norm": (SequenceNorm, {"sample_size": [2, 4, 8]}),
    "residual_cnn": (ResidualCNN, {"sample_size": [1, 1, 32, 32]}),
    "mobilenet": (MobileNetV2Tiny, {"sample_size": [1, 3, 32, 32]}),
    "attention": (AttentionBlock, {"sample_size": [2, 8, 32]}),
    "digits_transformer": (DigitsTransformer, {"sample_size": [2, 64]}),
}

# the keys that choose the placement today, and the quantization switches that interact with it
CONFIGS: dict[str, dict[str, Any]] = {
    "nncf": {},
    "onnxruntime": {"target_runtime": "onnxruntime"},
    "onnxruntime_cpu_outputs": {
        "target_runtime": "onnxruntime",
        "target_device": "CPU",
        "compression": {"algorithm": "quantization", "quantize_outputs": True, "quantize_inputs": False},
    },
    "onnxruntime_gpu": {"target_runtime": "onnxruntime", "target_device": "GPU"},
    "openvino": {"target_runtime": "openvino"},
    "transformer": {"model_type": "transformer"},
    "transformer_openvino": {"model_type": "transformer", "target_runtime": "openvino"},
}


def setup_of(model: str, config: str) -> dict[str, Any]:
    """The setup's counts and the SHA-256 of its JSON (the setups in full would be half a megabyte)."""
    model_cls, input_info = MODELS[model]
    top = {"input_info": input_info, "compression": {"algorithm": "quantization"}, **CONFIGS[config]}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no init data: ranges keep their defaults, which the setup does not hold
        ctrl, _ = create_compressed_model(model_cls(), NNCFConfig.from_dict(top), dump_graphs=False)
    setup = ctrl.setup.to_dict()
    digest = hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()
    return {"weights": len(setup["weights"]), "activations": len(setup["activations"]), "sha256": digest}


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("model", list(MODELS))
def test_setup_is_the_pinned_one(model, config, golden):
    assert setup_of(model, config) == golden[f"{model}/{config}"]


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    setups = {f"{m}/{c}": setup_of(m, c) for m in MODELS for c in CONFIGS}
    GOLDEN.write_text(json.dumps(setups, indent=1, sort_keys=True) + "\n")
