"""Scope names (NNCF spelling), scope matching and graph dumps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeezer.compression.graph.scopes import check_scopes_match, matches, should_consider
from squeezer.compression.graph.trace import name_nodes, trace
from squeezer.errors import ScopeError
from squeezer.examples.models import AttentionBlock, ResidualCNN


def names_of(model: nn.Module) -> list[str]:
    return list(name_nodes(trace(model), type(model).__name__).names.values())


def test_residual_cnn_scope_names():
    names = names_of(ResidualCNN())
    assert "/nncf_model_input_0" in names
    assert "ResidualCNN/Sequential[stem]/Conv2d[0]/conv2d_0" in names
    assert "ResidualCNN/BasicBlock[layer1]/Conv2d[conv1]/conv2d_0" in names
    assert "ResidualCNN/BasicBlock[layer1]/BatchNorm2d[bn2]/batch_norm_0" in names
    # the in-place ReLU module is called twice in a block: call counter per scope
    assert "ResidualCNN/BasicBlock[layer1]/ReLU[relu]/relu__0" in names
    assert "ResidualCNN/BasicBlock[layer1]/ReLU[relu]/relu__1" in names
    assert "ResidualCNN/BasicBlock[layer1]/__add___0" in names
    assert "ResidualCNN/BasicBlock[layer2]/Sequential[downsample]/Conv2d[0]/conv2d_0" in names
    assert "ResidualCNN/flatten_0" in names
    assert "ResidualCNN/Linear[fc]/linear_0" in names


def test_functional_ops_are_visible():
    names = names_of(AttentionBlock())
    assert "AttentionBlock/matmul_0" in names and "AttentionBlock/matmul_1" in names
    assert "AttentionBlock/softmax_0" in names
    assert "AttentionBlock/Linear[qkv]/linear_0" in names

    class Net(nn.Module):
        def forward(self, x):
            return F.relu(torch.cat([x, x * 2], 1), inplace=True)

    assert {"Net/cat_0", "Net/__mul___0", "Net/relu__0"} <= set(names_of(Net()))


def test_nncf_wrapped_class_alias():
    traced = name_nodes(trace(ResidualCNN()), "ResidualCNN")
    assert "ResidualCNN/BasicBlock[layer1]/NNCFConv2d[conv1]/conv2d_0" in traced.nncf_names.values()
    assert "ResidualCNN/BasicBlock[layer1]/NNCFBatchNorm2d[bn1]/batch_norm_0" in traced.nncf_names.values()


@pytest.mark.parametrize(
    ("name", "pattern", "expected"),
    [
        ("Net/Conv2d[conv]/conv2d_0", "Net/Conv2d[conv]/conv2d_0", True),
        ("Net/Conv2d[conv]/conv2d_0", "Net/Conv2d[conv]", False),  # module-style names match nothing exactly
        ("Net/Conv2d[conv]/conv2d_0", "{re}conv", True),  # unanchored search
        ("Net/Conv2d[conv]/conv2d_0", "{re}^conv", False),
        ("Net/Conv2d[conv]/conv2d_0", "{re}Net/Conv2d\\[conv\\]/.*", True),
    ],
)
def test_matching_rule(name, pattern, expected):
    assert matches(name, pattern) is expected


def test_ignore_wins_over_target():
    assert should_consider("a/conv_0", ignored=None, target=["{re}conv"])
    assert not should_consider("a/conv_0", ignored=["{re}a/"], target=["{re}conv"])
    assert not should_consider("a/linear_0", ignored=None, target=["{re}conv"])


def test_unmatched_scope_is_reported():
    with pytest.raises(ScopeError, match=r"no operation of the model matches the ignored_scopes \['Net/nope'\]"):
        check_scopes_match(["Net/conv2d_0"], ["Net/nope", "Net/conv2d_0"], "ignored_scopes", "$.ignored_scopes")


def test_compressed_model_keeps_the_module_tree():
    from squeezer import NNCFConfig, create_compressed_model

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
            self.unused = nn.Linear(2, 2)  # not called in forward: still in the state dict
            self.register_buffer("offset", torch.zeros(1))

        def forward(self, x):
            return self.features(x).mean((2, 3))

    original = Net()
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": {"algorithm": "quantization"}}
    )
    _, model = create_compressed_model(original, config, dump_graphs=False)
    assert isinstance(model.features, nn.Sequential) and isinstance(model.features[1], nn.ReLU)
    keys = {k.replace(".parametrizations.weight.original", ".weight") for k in model.state_dict()}
    assert set(original.state_dict()) <= keys
