"""Quantizer placement: what gets a quantizer on CNNs, MLPs, attention, concat; scopes and overrides."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args, register_module
from squeezer.errors import ScopeError
from squeezer.examples.models import MLP, AttentionBlock, DynamicNet, ResidualCNN

CNN_INFO = {"sample_size": [1, 1, 32, 32]}
B = "ResidualCNN/BasicBlock"


def build(model, quantization=None, input_info=None, **top):
    config = {
        "input_info": input_info or CNN_INFO,
        "compression": {"algorithm": "quantization", **(quantization or {})},
    }
    config.update(top)
    return create_compressed_model(model, NNCFConfig.from_dict(config), dump_graphs=False)


def act_ids(ctrl):
    return {p.id for p in ctrl.setup.activations}


def test_residual_cnn_activation_quantizers():
    ctrl, _ = build(ResidualCNN())
    expected = {
        "/nncf_model_input_0|OUTPUT",
        "ResidualCNN/Sequential[stem]/ReLU[2]/relu__0|OUTPUT",
        "ResidualCNN/AdaptiveAvgPool2d[pool]/adaptive_avg_pool2d_0|OUTPUT",
    }
    for layer in ("layer1", "layer2", "layer3"):
        expected |= {
            f"{B}[{layer}]/ReLU[relu]/relu__0|OUTPUT",  # conv1 -> bn1 -> relu: one quantizer after the pattern
            f"{B}[{layer}]/BatchNorm2d[bn2]/batch_norm_0|OUTPUT",  # residual add input
            f"{B}[{layer}]/ReLU[relu]/relu__1|OUTPUT",  # block output
        }
        if layer != "layer1":
            expected.add(f"{B}[{layer}]/Sequential[downsample]/BatchNorm2d[1]/batch_norm_0|OUTPUT")
    assert act_ids(ctrl) == expected
    assert len(ctrl.weight_quantizers) == 10  # every conv and the linear head


def test_a_tensor_feeding_two_ops_has_one_quantizer():
    ctrl, model = build(ResidualCNN())
    stem = next(p for p in ctrl.setup.activations if p.id.startswith("ResidualCNN/Sequential[stem]"))
    assert stem.consumers == [f"{B}[layer1]/Conv2d[conv1]/conv2d_0", f"{B}[layer1]/__add___0"]
    calls = [n for n in model.graph.nodes if n.op == "call_module" and stem.id in str(n.target)]
    assert len(calls) == 1  # one quantize call serves the conv and the residual add


def test_mlp_quantizes_both_inputs_of_the_residual_add():
    ctrl, _ = build(MLP(), input_info={"sample_size": [1, 64]})
    ids = act_ids(ctrl)
    assert "MLP/relu_1|OUTPUT" in ids and "MLP/relu_0|OUTPUT" in ids
    assert "MLP/__add___0|OUTPUT" in ids  # the add output feeds the head


def test_attention_matmuls_get_quantized_inputs_softmax_output_too():
    ctrl, model = build(AttentionBlock(), input_info={"sample_size": [2, 8, 32]})
    ids = act_ids(ctrl)
    assert "AttentionBlock/softmax_0|OUTPUT" in ids
    qkv = "AttentionBlock/Linear[qkv]/linear_0|OUTPUT"
    assert qkv in ids
    point = next(p for p in ctrl.setup.activations if p.id == qkv)
    # q, k, v reach the matmuls through reshape/permute/getitem: quantized again right before them
    assert {c for _, c in point.chain_ends} >= {"AttentionBlock/matmul_0", "AttentionBlock/matmul_1"}
    x = torch.randn(3, 8, 32)
    assert model(x).shape == (3, 8, 32)


@pytest.mark.parametrize("top", [{}, {"model_type": "transformer"}])
def test_attention_output_is_quantized_once_before_the_heads_transpose(top):
    """The projection reads the attention output through a transpose and a reshape, which both runtimes
    carry a dequantization through: its quantizer is applied once, after the matmul. A second call at
    the projection OpenVINO ran as a Convert plus a FakeQuantize per layer (DeiT-tiny 6-10% slower)."""
    ctrl, model = build(AttentionBlock(), input_info={"sample_size": [2, 8, 32]}, **top)
    point = next(p for p in ctrl.setup.activations if p.id == "AttentionBlock/matmul_1|OUTPUT")
    assert point.consumers == ["AttentionBlock/Linear[proj]/linear_0"]
    assert point.chain_ends == []
    calls = [n for n in model.graph.nodes if n.op == "call_module" and point.id in str(n.target)]
    assert len(calls) == 1


def test_concat_inputs_share_one_quantizer():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 4, 3, padding=1)
            self.b = nn.Conv2d(1, 4, 3, padding=1)
            self.c = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.c(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1))

    ctrl, _ = build(Cat(), input_info={"sample_size": [1, 1, 8, 8]})
    shared = [p for p in ctrl.setup.activations if len(p.producers) == 2]
    assert len(shared) == 1 and shared[0].producers == ["Cat/relu_0", "Cat/relu_1"]


def test_section_ignored_scope_removes_weight_and_input_quantizers():
    conv = f"{B}[layer2]/Conv2d[conv2]/conv2d_0"
    ctrl, _ = build(ResidualCNN(), {"ignored_scopes": [conv]})
    assert f"{conv}|WEIGHT" not in {w.id for w in ctrl.setup.weights}
    relu = (
        next(p for p in ctrl.setup.activations if p.id == f"{B}[layer2]/ReLU[relu]/relu__0|OUTPUT")
        if any(p.id == f"{B}[layer2]/ReLU[relu]/relu__0|OUTPUT" for p in ctrl.setup.activations)
        else None
    )
    assert relu is None  # its only consumer is ignored


def test_group_scopes_and_nncf_spelling():
    conv = f"{B}[layer2]/NNCFConv2d[conv2]/conv2d_0"  # NNCF's wrapped-class spelling works too
    ctrl, _ = build(ResidualCNN(), {"activations": {"ignored_scopes": [conv]}})
    assert f"{B}[layer2]/Conv2d[conv2]/conv2d_0|WEIGHT" in {w.id for w in ctrl.setup.weights}
    assert f"{B}[layer2]/ReLU[relu]/relu__0|OUTPUT" not in act_ids(ctrl)
    ctrl, _ = build(ResidualCNN(), {"weights": {"target_scopes": ["{re}layer3"]}})
    assert all("layer3" in w.id for w in ctrl.setup.weights) and len(ctrl.setup.weights) == 3


def test_global_scopes_apply_to_quantization():
    ctrl, _ = build(ResidualCNN(), ignored_scopes=["{re}Linear\\[fc\\]"])
    assert not any("fc" in w.id for w in ctrl.setup.weights)


def test_unknown_scope_is_an_error_unless_validation_is_off():
    with pytest.raises(ScopeError, match=r"no operation of the model matches.*Net/missing"):
        build(ResidualCNN(), {"ignored_scopes": ["Net/missing"]})
    build(ResidualCNN(), {"ignored_scopes": ["Net/missing"], "validate_scopes": False})


def test_inputs_outputs_switches():
    ctrl, _ = build(ResidualCNN(), {"quantize_inputs": False, "quantize_outputs": True})
    ids = act_ids(ctrl)
    assert "/nncf_model_input_0|OUTPUT" not in ids
    assert "ResidualCNN/Linear[fc]/linear_0|OUTPUT" in ids


def test_modes_bits_and_scope_overrides():
    ctrl, _ = build(
        ResidualCNN(),
        {
            "preset": "mixed",
            "weights": {"bits": 8},
            "scope_overrides": {"weights": {"{re}layer3": {"bits": 4, "mode": "asymmetric"}}},
        },
        target_device="TRIAL",
    )
    by_id = {w.id: w.spec for w in ctrl.setup.weights}
    assert by_id[f"{B}[layer3]/Conv2d[conv1]/conv2d_0|WEIGHT"].num_bits == 4
    assert by_id[f"{B}[layer3]/Conv2d[conv1]/conv2d_0|WEIGHT"].mode == "asymmetric"
    assert by_id[f"{B}[layer1]/Conv2d[conv1]/conv2d_0|WEIGHT"].num_bits == 8
    assert all(p.spec.mode == "asymmetric" for p in ctrl.setup.activations)  # preset mixed
    assert not any(s.per_channel for s in by_id.values())  # TRIAL: per-tensor by default


def test_target_device_defaults_and_overflow_fix():
    ctrl, _ = build(ResidualCNN())
    specs = [w.spec for w in ctrl.setup.weights]
    assert all(s.per_channel and s.half_range and s.signedness_to_force for s in specs)
    ctrl, _ = build(ResidualCNN(), {"overflow_fix": "first_layer_only"})
    half = [w.id for w in ctrl.setup.weights if w.spec.half_range]
    assert half == ["ResidualCNN/Sequential[stem]/Conv2d[0]/conv2d_0|WEIGHT"]
    ctrl, _ = build(ResidualCNN(), target_device="GPU")
    assert not any(w.spec.half_range for w in ctrl.setup.weights)
    assert all(w.spec.narrow_range for w in ctrl.setup.weights)


def test_manual_precision_by_quantizer_id(digits32):
    ctrl, _ = build(
        ResidualCNN(),
        {
            "initializer": {
                "precision": {
                    "bitwidth_per_scope": [
                        [4, "ResidualCNN/Linear[fc]/linear_0|WEIGHT"],
                        [6, "ResidualCNN/Sequential[stem]/ReLU[2]/relu__0|OUTPUT"],
                    ]
                }
            }
        },
    )
    assert next(w for w in ctrl.setup.weights if "fc" in w.id).spec.num_bits == 4
    assert next(p for p in ctrl.setup.activations if "stem" in p.id).spec.num_bits == 6


def test_untraceable_model_gets_weight_quantizers_and_a_warning():
    with pytest.warns(RuntimeWarning, match="could not be traced.*activation quantizers were skipped"):
        ctrl, model = build(DynamicNet(), input_info={"sample_size": [1, 64]})
    assert {w.module for w in ctrl.setup.weights} == {"fc1", "fc2"}
    assert ctrl.setup.activations == []
    assert model(torch.randn(2, 64)).shape == (2, 10)


def test_registered_custom_module_is_quantized():
    @register_module(ignored_algorithms=[])
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 8))

        def forward(self, x):
            return x @ self.weight.t()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.custom = Scaled()

        def forward(self, x):
            return self.custom(x)

    ctrl, _ = build(Net(), input_info={"sample_size": [1, 8]})
    assert [w.id for w in ctrl.setup.weights] == ["Net/Scaled[custom]/scaled_0|WEIGHT"]
    assert "/nncf_model_input_0|OUTPUT" in act_ids(ctrl)


def test_missing_input_info_without_loader_is_a_config_error():
    from squeezer import ConfigError

    with pytest.raises(ConfigError, match=r"input_info is missing") as info:
        create_compressed_model(ResidualCNN(), NNCFConfig.from_dict({"compression": {"algorithm": "quantization"}}))
    assert info.value.path == "$.input_info"


def test_inputs_deduced_from_the_init_loader(digits32):
    config = register_default_init_args(
        NNCFConfig.from_dict({"compression": {"algorithm": "quantization"}}), digits32[0]
    )
    ctrl, _ = create_compressed_model(ResidualCNN(), config, dump_graphs=False)
    assert "/nncf_model_input_0|OUTPUT" in act_ids(ctrl)


def test_keyword_inputs_and_a_custom_init_loader():
    from squeezer import InitDataLoader

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(8, 4)
            self.b = nn.Linear(8, 4)

        def forward(self, x, context=None):
            return self.a(x) + self.b(context)

    class DictLoader(InitDataLoader):
        def get_inputs(self, item):
            return (item["x"],), {"context": item["context"]}

        def get_target(self, item):
            return None

    data = [{"x": torch.randn(4, 8), "context": torch.randn(4, 8)} for _ in range(3)]
    config = NNCFConfig.from_dict(
        {
            "input_info": [{"sample_size": [1, 8]}, {"sample_size": [1, 8], "keyword": "context"}],
            "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 8}}},
        }
    )
    register_default_init_args(config, DictLoader(data, batch_size=4))
    ctrl, model = create_compressed_model(TwoInputs(), config, dump_graphs=False)
    assert {"/nncf_model_input_0|OUTPUT", "/nncf_model_input_1|OUTPUT"} <= act_ids(ctrl)
    assert all(q.initialized for q in ctrl.non_weight_quantizers.values())  # ranges came from the loader
    out = model(data[0]["x"], context=data[0]["context"])
    assert out.shape == (4, 4)
