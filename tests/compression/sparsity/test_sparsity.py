"""Sparsity algorithms: schedules epoch by epoch, stages, masks, RB loss, const masks, strip and export."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from squeezer import CompressionStage, NNCFConfig, create_compressed_model
from squeezer.examples.models import MLP, ResidualCNN

CNN = {"sample_size": [1, 1, 32, 32]}


def build(section, model=None, input_info=None):
    config = NNCFConfig.from_dict({"input_info": input_info or CNN, "compression": section})
    return create_compressed_model(model or ResidualCNN(), config, dump_graphs=False)


def levels(ctrl, epochs):
    out = []
    for _ in range(epochs):
        ctrl.scheduler.epoch_step()
        out.append(round(ctrl.scheduler.current_sparsity_level, 4))
    return out


def test_polynomial_schedule_matches_spec_example():
    ctrl, _ = build({"algorithm": "magnitude_sparsity"})
    by_epoch = dict(enumerate(levels(ctrl, 92)))
    assert [by_epoch[e] for e in (0, 1, 10, 45, 89, 90)] == [0.0, 0.005, 0.0503, 0.2321, 0.4913, 0.5]


def test_polynomial_convex_and_per_step():
    ctrl, _ = build(
        {
            "algorithm": "magnitude_sparsity",
            "params": {
                "concave": False,
                "power": 1,
                "sparsity_target": 0.4,
                "sparsity_target_epoch": 4,
                "update_per_optimizer_step": True,
                "steps_per_epoch": 4,
            },
        }
    )
    ctrl.scheduler.epoch_step()  # epoch 0
    seen = []
    for _ in range(4):
        ctrl.scheduler.step()
        seen.append(round(ctrl.level, 4))
    assert seen == [0.0, 0.025, 0.05, 0.075]  # fractional epochs 0, 1/4, 2/4, 3/4 of 4 epochs to 0.4


def test_exponential_schedule_matches_spec_example():
    ctrl, _ = build(
        {
            "algorithm": "rb_sparsity",
            "sparsity_init": 0.01,
            "params": {"sparsity_target": 0.61, "sparsity_target_epoch": 5},
        }
    )
    assert levels(ctrl, 7) == [0.01, 0.1783, 0.318, 0.4339, 0.5301, 0.61, 0.61]


def test_multistep_schedule_and_stages():
    ctrl, _ = build(
        {
            "algorithm": "magnitude_sparsity",
            "sparsity_init": 0.05,
            "params": {
                "schedule": "multistep",
                "multistep_steps": [2, 4],
                "multistep_sparsity_levels": [0.1, 0.3, 0.5],
            },
        }
    )
    assert ctrl.compression_stage() == CompressionStage.PARTIALLY_COMPRESSED  # at sparsity_init
    assert ctrl.measured_sparsity_level() == pytest.approx(0.05, abs=1e-3)
    stages = []
    for expected in (0.1, 0.1, 0.3, 0.3, 0.5, 0.5):
        ctrl.scheduler.epoch_step()
        assert ctrl.scheduler.current_sparsity_level == expected
        assert ctrl.measured_sparsity_level() == pytest.approx(expected, abs=1e-3)
        stages.append(ctrl.compression_stage())
    assert stages[-1] == CompressionStage.FULLY_COMPRESSED
    assert stages[:4] == [CompressionStage.PARTIALLY_COMPRESSED] * 4


def test_adaptive_schedule_raises_level_by_patience():
    ctrl, _ = build(
        {
            "algorithm": "magnitude_sparsity",
            "sparsity_init": 0.1,
            "params": {"schedule": "adaptive", "patience": 2, "sparsity_target": 0.25},
        }
    )
    assert levels(ctrl, 6) == [0.1, 0.15, 0.15, 0.2, 0.2, 0.25]


def test_stage_moves_from_uncompressed_to_fully():
    ctrl, _ = build({"algorithm": "magnitude_sparsity", "params": {"sparsity_target_epoch": 2}})
    assert ctrl.compression_stage() == CompressionStage.UNCOMPRESSED
    ctrl.scheduler.epoch_step()
    assert ctrl.compression_stage() == CompressionStage.UNCOMPRESSED  # epoch 0 of polynomial is level 0
    ctrl.scheduler.epoch_step()
    assert ctrl.compression_stage() == CompressionStage.PARTIALLY_COMPRESSED
    ctrl.scheduler.epoch_step()
    assert ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED


def test_freeze_epoch_stops_mask_updates_and_rate_setter_still_works():
    ctrl, model = build(
        {
            "algorithm": "magnitude_sparsity",
            "params": {
                "schedule": "multistep",
                "multistep_steps": [1],
                "multistep_sparsity_levels": [0.2, 0.6],
                "sparsity_freeze_epoch": 0,
            },
        }
    )
    ctrl.scheduler.epoch_step()  # freezes at epoch 0 with level 0.2
    ctrl.scheduler.epoch_step()  # level 0.6 scheduled, but masks are frozen
    assert ctrl.measured_sparsity_level() == pytest.approx(0.2, abs=1e-3)
    ctrl.compression_rate = 0.7
    assert ctrl.compression_rate == 0.7 and ctrl.frozen
    assert ctrl.measured_sparsity_level() == pytest.approx(0.7, abs=1e-3)


def test_magnitude_threshold_is_global_and_weights_are_zeroed():
    dense = ResidualCNN()
    for m in dense.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.constant_(m.bias, 0.1)  # fresh BN biases are exactly 0: they would count as sparse
    ctrl, model = build(
        {"algorithm": "magnitude_sparsity", "sparsity_init": 0.4, "params": {"weight_importance": "abs"}}, model=dense
    )
    per_layer = [float((m.weight == 0).float().mean()) for _, m, _ in ctrl.layers]
    assert max(per_layer) - min(per_layer) > 0.1  # one threshold, different layer sparsities
    stats = ctrl.statistics().magnitude_sparsity
    assert stats["sparsity_level_for_sparsified_layers"] == pytest.approx(0.4, abs=1e-3)
    assert stats["sparsity_level_for_model"] < 0.4  # BN and bias parameters are dense
    x = torch.rand(2, 1, 32, 32)
    model.train()
    F.cross_entropy(model(x), torch.tensor([1, 2])).backward()
    grad = model.stem[0].parametrizations.weight.original.grad
    mask = ctrl.layers[0][2].mask
    assert torch.all(grad[mask == 0] == 0)  # masked weights get no gradient from the task


def test_level_zero_masks_nothing_and_bad_levels_are_refused():
    ctrl, _ = build({"algorithm": "magnitude_sparsity"})
    assert ctrl.measured_sparsity_level() == 0.0
    with pytest.raises(ValueError, match=r"sparsity level must be in \[0, 1\), got 1.0"):
        ctrl.set_sparsity_level(1.0)


def test_rb_loss_value_gradient_and_masks():
    torch.manual_seed(0)
    ctrl, model = build(
        {
            "algorithm": "rb_sparsity",
            "sparsity_init": 0.5,
            "params": {"schedule": "multistep", "multistep_steps": [100], "multistep_sparsity_levels": [0.5, 0.5]},
        },
        model=MLP(),
        input_info={"sample_size": [1, 64]},
    )
    assert ctrl.loss().item() == pytest.approx((0.5 / 0.05) ** 2, rel=1e-4)  # every weight kept at start
    logits = [mask._mask for _, _, mask in ctrl.layers]
    ctrl.loss().backward()
    assert all(bool((g.grad > 0).all()) for g in logits)  # too dense: gradient descent lowers every logit
    with torch.no_grad():  # drop exactly half of every layer: density hits the target, loss vanishes
        for g in logits:
            g.view(-1)[: g.numel() // 2] = -3.0
    assert ctrl.measured_sparsity_level() == pytest.approx(0.5, abs=1e-3)
    assert ctrl.loss().item() == pytest.approx(0.0, abs=1e-6)
    x = torch.rand(8, 64)
    model.eval()
    assert torch.equal(model(x), model(x))  # eval: deterministic threshold
    model.train()
    assert not torch.equal(model(x), model(x))  # training: a Bernoulli sample of the mask each forward
    ctrl.freeze()
    assert ctrl.loss().item() == 0.0


def test_const_sparsity_keeps_existing_zeros():
    model = ResidualCNN()
    with torch.no_grad():
        model.fc.weight[:, :32] = 0
    ctrl, compressed = build({"algorithm": "const_sparsity"}, model=model)
    fc_mask = next(mask for layer, _, mask in ctrl.layers if layer.module_name == "fc")
    assert float((fc_mask.mask == 0).float().mean()) == 0.5
    with torch.no_grad():
        compressed.fc.parametrizations.weight.original.fill_(1.0)  # training cannot revive them
    assert float((compressed.fc.weight == 0).float().mean()) == 0.5
    assert ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED and ctrl.compression_rate is None


def test_frozen_layers_are_refused_except_by_const():
    from squeezer.errors import CompressionError

    model = ResidualCNN()
    model.fc.weight.requires_grad_(False)
    with pytest.raises(CompressionError, match=r"frozen layers are not allowed for magnitude sparsity: .*Linear\[fc\]"):
        build({"algorithm": "magnitude_sparsity"}, model=model)
    build({"algorithm": "const_sparsity"}, model=model)


def test_scopes_limit_sparsified_layers():
    ctrl, _ = build({"algorithm": "magnitude_sparsity", "ignored_scopes": ["{re}layer[12]"]})
    assert [layer.module_name for layer, _, _ in ctrl.layers] == [
        "stem.0",
        "layer3.conv1",
        "layer3.conv2",
        "layer3.downsample.0",
        "fc",
    ]


def test_strip_and_export_carry_the_zeros(tmp_path):
    ctrl, model = build({"algorithm": "magnitude_sparsity", "sparsity_init": 0.5})
    stripped = ctrl.strip()
    assert not any(".parametrizations." in k for k in stripped.state_dict())
    x = torch.rand(3, 1, 32, 32)
    model.eval()
    stripped.eval()
    with torch.no_grad():
        torch.testing.assert_close(stripped(x), model(x))
    path = ctrl.export_model(tmp_path / "sparse.onnx")
    weights = [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer if i.dims and len(i.dims) >= 2]
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.size for w in weights)
    reported = ctrl.statistics().magnitude_sparsity["sparsity_level_for_sparsified_layers"]
    assert zeros / total == pytest.approx(reported, abs=1e-3)  # BN folding keeps zeros zero
    assert np.isfinite(zeros)
