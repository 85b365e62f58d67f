"""A model neither torch.fx nor torch.export can capture gets the weight quantizers its traceable twin
gets: the same layers, the same specs, for every config key that decides a weight quantizer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, register_module
from squeezer.compression.config.models import QuantizationConfig
from squeezer.compression.graph.modules import is_weighted_for
from squeezer.compression.graph.trace import name_nodes, trace
from squeezer.compression.quantization.placement import PlacementOptions, compute_setup, untraced_setup

INFO = {"sample_size": [1, 1, 12, 12]}


class Twin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3)
        self.body = nn.Conv2d(4, 8, 3)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.body(F.relu(self.stem(x))))
        return self.head(h.mean((2, 3)))


class Untraceable(Twin):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        if h.sum() > 0:  # data-dependent: fx and torch.export both refuse it
            h = h * 2
        h = F.relu(self.body(h))
        return self.head(h.mean((2, 3)))


def specs(setup):
    return {(w.module, w.tensor): w.spec for w in setup.weights}


CASES = {
    "defaults": ({}, {}),
    "scope_overrides": (
        {"scope_overrides": {"weights": {"{re}.*body.*": {"bits": 4, "mode": "asymmetric", "per_channel": False}}}},
        {},
    ),
    "signed_beats_the_device": ({"weights": {"signed": False}}, {}),
    "signed_on_trial": ({"weights": {"signed": True}}, {"target_device": "TRIAL"}),
    "unsigned_default_on_trial": ({}, {"target_device": "TRIAL"}),
    "logarithm_scale": ({"weights": {"logarithm_scale": True}}, {}),
    "first_layer_only": ({"overflow_fix": "first_layer_only"}, {}),
    "overflow_fix_disabled": ({"overflow_fix": "disable"}, {}),
    "gpu": ({}, {"target_device": "GPU"}),
    "cpu_spr": ({}, {"target_device": "CPU_SPR"}),
    "lr_multiplier": ({"compression_lr_multiplier": 3.0}, {}),
    "group_ignored_scopes": ({"weights": {"ignored_scopes": ["{re}.*head.*"]}}, {}),
    "section_target_scopes": ({"target_scopes": ["{re}.*(stem|body).*"]}, {}),
    "global_ignored_scopes": ({}, {"ignored_scopes": ["{re}.*stem.*"]}),
}


@pytest.mark.parametrize("section, top", CASES.values(), ids=CASES.keys())
def test_untraced_setup_matches_the_traced_one(section, top):
    cfg = QuantizationConfig.model_validate({"algorithm": "quantization", **section})
    opts = PlacementOptions(top.get("target_device", "ANY"), top.get("ignored_scopes"), top.get("target_scopes"))
    traced = compute_setup(name_nodes(trace(Twin()), "Twin"), cfg, opts)
    untraced = untraced_setup(Untraceable(), cfg, opts)
    assert specs(untraced) == specs(traced)
    assert specs(traced)  # the case leaves something to compare


def test_first_layer_only_half_ranges_the_first_conv_alone():
    cfg = QuantizationConfig.model_validate({"algorithm": "quantization", "overflow_fix": "first_layer_only"})
    setup = untraced_setup(Untraceable(), cfg, PlacementOptions("CPU", None, None))
    assert {m for (m, _), s in specs(setup).items() if s.half_range} == {"stem"}


def test_the_build_of_an_untraceable_model_uses_the_shared_rules():
    section = {
        "algorithm": "quantization",
        "weights": {"signed": False, "logarithm_scale": True, "ignored_scopes": ["{re}.*head.*"]},
        "scope_overrides": {"weights": {"{re}.*body.*": {"bits": 4}}},
        "overflow_fix": "first_layer_only",
    }

    def build(model):
        config = NNCFConfig.from_dict({"input_info": INFO, "compression": section})
        return create_compressed_model(model, config, dump_graphs=False)[0]

    with pytest.warns(RuntimeWarning, match="could not be traced"):
        untraced = build(Untraceable())
    traced = build(Twin())
    assert specs(untraced.setup) == specs(traced.setup)
    assert {m for m, _ in specs(untraced.setup)} == {"stem", "body"}
    assert specs(untraced.setup)[("body", "weight")].num_bits == 4
    assert not specs(untraced.setup)[("stem", "weight")].signedness_to_force


def test_one_layer_predicate_for_both_paths():
    """A registered module that lists quantization in its ignored algorithms keeps a float weight, even
    when it subclasses a built-in layer; the other algorithms still see it as a layer."""

    @register_module(ignored_algorithms=["quantization"])
    class FloatHead(nn.Linear):
        pass

    class Net(Twin):
        def __init__(self) -> None:
            super().__init__()
            self.head = FloatHead(8, 10)

    class UntraceableNet(Untraceable):
        def __init__(self) -> None:
            super().__init__()
            self.head = FloatHead(8, 10)

    head = FloatHead(8, 10)
    assert not is_weighted_for(head, "quantization") and is_weighted_for(head, "magnitude_sparsity")
    cfg = QuantizationConfig.model_validate({"algorithm": "quantization"})
    opts = PlacementOptions("ANY", None, None)
    traced = compute_setup(name_nodes(trace(Net()), "Net"), cfg, opts)
    untraced = untraced_setup(UntraceableNet(), cfg, opts)
    assert {m for m, _ in specs(traced)} == {m for m, _ in specs(untraced)} == {"stem", "body"}
