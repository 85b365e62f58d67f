"""Filter pruning: groups, schedules epoch by epoch, levels, stages, physical removal, export."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from squeezer import CompressionStage, NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.compression.pruning.importance import filter_importance, keep_count_uniform
from squeezer.examples.models import ResidualCNN

CNN = {"sample_size": [1, 1, 32, 32]}
ALL = {"prune_first_conv": True, "prune_downsample_convs": True}


def build(params=None, model=None, input_info=None, **section):
    config = NNCFConfig.from_dict(
        {
            "input_info": input_info or CNN,
            "compression": {"algorithm": "filter_pruning", "params": params or {}, **section},
        }
    )
    return create_compressed_model(model or ResidualCNN(), config, dump_graphs=False)


def producers(ctrl):
    return [sorted(g.producer_names) for g in ctrl.groups]


def test_groups_follow_residual_adds_and_rules():
    ctrl, _ = build(ALL)
    groups = producers(ctrl)
    assert ["layer1.conv2", "stem.0"] in groups  # joined by the identity shortcut of layer1
    assert ["layer2.conv2", "layer2.downsample.0"] in groups  # joined by layer2's residual add
    assert all("fc" not in g for g in groups)  # the classifier feeds the model output
    ctrl, _ = build({})  # defaults: no first conv, no stride-2 convs
    flat = {name for g in producers(ctrl) for name in g}
    assert flat == {"layer1.conv1"}  # every other group holds stem.0 or a stride-2 conv
    ctrl, _ = build(ALL, ignored_scopes=["{re}layer3"])
    assert not any("layer3" in name for g in producers(ctrl) for name in g)


def test_concat_and_depthwise_groups():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 16, 3, padding=1)
            self.b = nn.Conv2d(3, 16, 3, padding=1)
            self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
            self.bn = nn.BatchNorm2d(32)
            self.pw = nn.Conv2d(32, 8, 1)
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            y = torch.cat([self.a(x), self.b(x)], 1)
            y = self.pw(torch.relu(self.bn(self.dw(y))))
            return self.head(y.mean((2, 3)))

    ctrl, model = build(
        {**ALL, "pruning_target": 0.5}, model=Net(), input_info={"sample_size": [1, 3, 8, 8]}, pruning_init=0.5
    )
    by_name = {name: g for g in ctrl.groups for name in g.producer_names}
    assert by_name["a"] is by_name["b"] is by_name["dw"]  # concat + depthwise: one group of 32 channels
    assert by_name["a"].n == 32
    stripped = ctrl.strip()
    assert stripped.dw.groups == stripped.dw.in_channels == stripped.dw.out_channels == 16
    assert stripped.pw.in_channels == 16 and stripped.bn.num_features == 16
    x = torch.rand(2, 3, 8, 8)
    model.eval()
    stripped.eval()
    with torch.no_grad():
        torch.testing.assert_close(stripped(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("n", "level", "pruned"), [(64, 0.1, 0), (64, 0.3, 16), (64, 0.5, 32), (100, 0.5, 44), (256, 0.1, 24), (16, 0.5, 8)]
)
def test_uniform_level_keeps_multiples_of_eight(n, level, pruned):
    assert n - keep_count_uniform(n, level) == pruned


def test_exponential_schedule_matches_spec_example():
    ctrl, _ = build({**ALL, "pruning_target": 0.4, "pruning_steps": 20}, pruning_init=0.1)
    seen = []
    for _ in range(6):
        ctrl.scheduler.epoch_step()
        seen.append(round(ctrl.scheduler.current_pruning_level, 4))
    assert seen == [0.1, 0.119, 0.1376, 0.1558, 0.1736, 0.1911]
    for _ in range(20):
        ctrl.scheduler.epoch_step()
    assert ctrl.scheduler.current_pruning_level == pytest.approx(0.4) and ctrl.frozen


def test_exponential_with_bias_matches_spec_example():
    ctrl, _ = build(
        {**ALL, "schedule": "exponential_with_bias", "pruning_target": 0.4, "pruning_steps": 20}, pruning_init=0.1
    )
    seen = []
    for _ in range(6):
        ctrl.scheduler.epoch_step()
        seen.append(round(ctrl.scheduler.current_pruning_level, 4))
    assert seen == pytest.approx([0.1, 0.2111, 0.2811, 0.3251, 0.3529, 0.3703], abs=2e-4)


def test_baseline_warmup_and_stages():
    ctrl, _ = build({**ALL, "schedule": "baseline", "pruning_target": 0.5, "num_init_steps": 2}, pruning_init=0.25)
    assert ctrl.compression_stage() == CompressionStage.PARTIALLY_COMPRESSED  # pruning_init applied at creation
    stages, levels = [], []
    for _ in range(4):
        ctrl.scheduler.epoch_step()
        stages.append(ctrl.compression_stage())
        levels.append(ctrl.scheduler.current_pruning_level)
    assert levels == [0.0, 0.0, 0.5, 0.5]  # warm-up epochs prune nothing
    assert stages == [
        CompressionStage.UNCOMPRESSED,
        CompressionStage.UNCOMPRESSED,
        CompressionStage.FULLY_COMPRESSED,
        CompressionStage.FULLY_COMPRESSED,
    ]


@pytest.mark.parametrize("importance", ["L1", "L2", "geometric_median"])
def test_least_important_filters_go_first(importance):
    ctrl, model = build({**ALL, "filter_importance": importance, "pruning_target": 0.5}, pruning_init=0.5)
    group = next(g for g in ctrl.groups if g.producer_names == ["layer2.conv1"])
    weight = model.layer2.conv1.parametrizations.weight.original
    scores = filter_importance(weight, 0, importance)
    mask = ctrl.group_mask(group)
    assert int((mask == 0).sum()) == 16
    assert scores[mask == 0].max() <= scores[mask == 1].min()


def test_all_weights_uses_one_global_threshold():
    ctrl, _ = build({**ALL, "all_weights": True, "pruning_target": 0.5}, pruning_init=0.5)
    masks = ctrl.current_masks()
    pruned = [float((m == 0).float().mean()) for m in masks.values()]
    total = sum(int((m == 0).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert total == pytest.approx(0.5, abs=0.02)
    assert max(pruned) - min(pruned) > 0.05  # groups end at different levels


def test_flops_target_and_rate():
    # 64-256 channels: multiples of 8 are fine-grained enough to land close to a FLOPs goal
    ctrl, _ = build({**ALL, "pruning_flops_target": 0.5}, model=ResidualCNN(width=64))
    assert ctrl.compression_rate == 0.0
    ctrl.scheduler.epoch_step()  # exponential from 0: still 0 at epoch 0
    ctrl.compression_rate = 0.5
    # the smallest uniform level removing half the FLOPs; kept widths move in steps of 8 channels
    assert 0.5 <= ctrl.compression_rate <= 0.65
    assert ctrl.statistics().filter_pruning["model_FLOPS_pruning_level"] == ctrl.compression_rate
    assert 0.5 < ctrl.maximal_compression_rate < 1.0


def test_strip_removes_channels_and_matches_the_masked_model(tmp_path):
    torch.manual_seed(0)
    ctrl, model = build({**ALL, "pruning_target": 0.5}, pruning_init=0.5)
    stats = ctrl.statistics().filter_pruning
    stripped = ctrl.strip()
    n_params = sum(p.numel() for p in stripped.parameters())
    assert n_params == stats["params"]["current"] < 0.3 * stats["params"]["full"]
    assert stats["model_FLOPS_pruning_level"] > 0.7
    x = torch.rand(5, 1, 32, 32)
    model.eval()
    stripped.eval()
    with torch.no_grad():
        torch.testing.assert_close(stripped(x), model(x), atol=1e-5, rtol=1e-5)
    assert stripped.layer2.conv1.out_channels == 16 and stripped.layer2.bn1.num_features == 16
    path = ctrl.export_model(tmp_path / "pruned.onnx")
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    conv_params = sum(w.size for w in weights.values() if w.ndim == 4)
    assert conv_params < 0.3 * sum(p.numel() for n, p in ResidualCNN().named_parameters() if p.dim() == 4)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"input.0": x.numpy()})[0]
    np.testing.assert_allclose(out, model(x).detach().numpy(), atol=1e-4)


def test_pruning_and_int8_export_as_one_qdq_model(tmp_path, digits32):
    config = register_default_init_args(
        NNCFConfig.from_dict(
            {
                "input_info": CNN,
                "compression": [
                    {"algorithm": "filter_pruning", "pruning_init": 0.5, "params": {**ALL, "pruning_target": 0.5}},
                    {"algorithm": "quantization"},
                ],
            }
        ),
        digits32[0],
    )
    ctrl, model = create_compressed_model(ResidualCNN(), config, dump_graphs=False)
    path = ctrl.export_model(tmp_path / "pruned_int8.onnx")
    graph = onnx.load(str(path)).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["QuantizeLinear"] > 0 and "BatchNormalization" not in ops
    int8 = [onnx.numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert max(w.shape[0] for w in int8 if w.ndim == 4) == 32  # the 64-channel convs kept half
    stripped = ctrl.strip()
    assert stripped.layer3.conv1.parametrizations.weight[0].scale.numel() == 32  # per-channel ranges cut too


def test_masks_zero_channels_during_training():
    ctrl, model = build({**ALL, "pruning_target": 0.5}, pruning_init=0.5)
    group = next(g for g in ctrl.groups if g.producer_names == ["layer2.conv1"])
    mask = ctrl.group_mask(group).bool()
    model.train()
    acts = {}
    model.layer2.bn1.register_forward_hook(lambda m, i, o: acts.setdefault("bn1", o))
    model(torch.rand(4, 1, 32, 32))
    assert torch.all(acts["bn1"][:, ~mask] == 0)  # BN masked too: pruned channels stay zero


def test_learned_ranking_sample_config_learns_saves_and_reloads(tmp_path, digits32):
    from tests.conftest import SAMPLE_CONFIGS

    train, val = digits32
    calls = {"train": 0, "validate": 0}

    def train_steps_fn(loader, model, optimizer, ctrl, steps):
        model.train()
        for step, (x, y) in enumerate(loader):
            if step == steps:
                break
            loss = torch.nn.functional.cross_entropy(model(x), y) + ctrl.loss()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        calls["train"] += 1

    def validate_fn(model, loader):
        calls["validate"] += 1
        model.eval()
        with torch.no_grad():
            x, y = next(iter(loader))
            return float((model(x).argmax(1) == y).float().mean())

    config = NNCFConfig.from_json(SAMPLE_CONFIGS / "filter_pruning_learned_ranking.json")
    params = config["compression"][0]["params"]
    # the sample's search is sized for real training; keep its shape, not its size
    params["legr_params"].update(generations=3, population_size=4, num_samples=2, train_steps=2)
    params["save_ranking_coeffs_path"] = str(tmp_path / "ranking.json")
    register_default_init_args(config, train, train_steps_fn=train_steps_fn, validate_fn=validate_fn, val_loader=val)
    ctrl, _ = create_compressed_model(ResidualCNN(width=32), config, dump_graphs=False)
    assert calls == {"train": 7, "validate": 7}  # 4 initial candidates + 3 generations
    assert ctrl.all_weights and ctrl.ranking is not None
    assert ctrl.compression_rate == pytest.approx(0.1, abs=0.03)  # pruning_init as a share of FLOPs
    assert (tmp_path / "ranking.json").exists()

    reload = NNCFConfig.from_json(SAMPLE_CONFIGS / "filter_pruning_learned_ranking.json")
    reload["compression"][0]["params"]["load_ranking_coeffs_path"] = str(tmp_path / "ranking.json")
    # the samples fix no input shape: without data loaders, the inputs come from example_input
    again, _ = create_compressed_model(
        ResidualCNN(width=32), reload, dump_graphs=False, example_input=torch.rand(1, 1, 32, 32)
    )
    assert again.ranking == ctrl.ranking


def test_learned_ranking_without_functions_is_a_clear_error():
    from squeezer.errors import CompressionError

    with pytest.raises(CompressionError, match="learned_ranking needs training and validation functions"):
        build({"interlayer_ranking_type": "learned_ranking", "pruning_flops_target": 0.3})
