"""The placement policy is chosen once per model from the config (`target_runtime`, `model_type`,
`target_device`) and is the one the quantization builder places with."""

from __future__ import annotations

import pytest
from torch import nn

from squeezer import NNCFConfig, create_compressed_model
from squeezer.compression.quantization.placement_policy import (
    NNCF_PLACEMENT,
    ONNXRUNTIME_PLACEMENT,
    placement_policy,
)


def config(**top) -> NNCFConfig:
    return NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 4]}, "compression": {"algorithm": "quantization"}, **top}
    )


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ({}, NNCF_PLACEMENT),
        ({"target_runtime": "onnxruntime"}, ONNXRUNTIME_PLACEMENT),
        ({"target_runtime": "onnxruntime", "target_device": "CPU"}, ONNXRUNTIME_PLACEMENT),
        ({"target_runtime": "onnxruntime", "target_device": "GPU"}, NNCF_PLACEMENT),
        ({"target_runtime": "onnxruntime", "target_device": "TRIAL"}, NNCF_PLACEMENT),
        ({"target_runtime": "openvino"}, NNCF_PLACEMENT),
        ({"model_type": "transformer"}, ONNXRUNTIME_PLACEMENT),  # residual sums' outliers stay FP32
        ({"model_type": "transformer", "target_runtime": "openvino"}, NNCF_PLACEMENT),
        ({"model_type": "transformer", "target_device": "NPU"}, NNCF_PLACEMENT),
    ],
)
def test_policy_is_picked_from_the_config(top, expected):
    assert placement_policy(config(**top).model) is expected


@pytest.mark.parametrize("runtime", [None, "onnxruntime"])
def test_the_builder_places_with_the_chosen_policy(runtime):
    top = {"target_runtime": runtime} if runtime else {}
    ctrl, _ = create_compressed_model(nn.Sequential(nn.Linear(4, 4), nn.SiLU()), config(**top), dump_graphs=False)
    assert ctrl.context is not None
    assert ctrl.context.placement is (ONNXRUNTIME_PLACEMENT if runtime else NNCF_PLACEMENT)


def test_the_policies_differ_where_their_runtimes_do():
    """NNCF's placement is the default. It answers no to the questions where onnxruntime needs more or
    fewer quantizers, and yes to the one where OpenVINO needs another storage type."""
    nncf, ort = vars(NNCF_PLACEMENT), vars(ONNXRUNTIME_PLACEMENT)
    openvino_only = {"stores_signed_concat_inputs_as_int8"}
    onnxruntime_only = set(nncf) - {"name"} - openvino_only
    assert onnxruntime_only and not any(nncf[k] for k in onnxruntime_only) and all(ort[k] for k in onnxruntime_only)
    assert all(nncf[k] and not ort[k] for k in openvino_only)
