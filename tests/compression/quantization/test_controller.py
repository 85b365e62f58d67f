"""Quantization controller: staged schedule, stages, statistics, state, range init and BN adaptation."""

from __future__ import annotations

import json

import pytest
import torch

from squeezer import CompressionStage, NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.compression.quantization.range_init import StatCollector
from squeezer.errors import CompressionError
from squeezer.examples.models import ResidualCNN

INFO = {"sample_size": [1, 1, 32, 32]}


def build(loader=None, **quantization):
    config = NNCFConfig.from_dict({"input_info": INFO, "compression": {"algorithm": "quantization", **quantization}})
    if loader is not None:
        register_default_init_args(config, loader)
    return create_compressed_model(ResidualCNN(), config, dump_graphs=False)


def test_staged_schedule_enables_groups_at_their_epochs():
    ctrl, _ = build(
        params={"activations_quant_start_epoch": 1, "weights_quant_start_epoch": 2},
        initializer={"range": {"num_init_samples": 0}},
    )
    acts = list(ctrl.non_weight_quantizers.values())
    weights = list(ctrl.weight_quantizers.values())
    stages, flags = [], []
    for _ in range(3):
        ctrl.scheduler.epoch_step()
        stages.append(ctrl.compression_stage())
        flags.append((acts[0].is_enabled, weights[0].is_enabled))
    assert stages == [
        CompressionStage.UNCOMPRESSED,
        CompressionStage.PARTIALLY_COMPRESSED,
        CompressionStage.FULLY_COMPRESSED,
    ]
    assert flags == [(False, False), (True, False), (True, True)]
    assert all(q.is_enabled for q in ctrl.all_quantizations.values())


def test_staged_state_restores_flags():
    ctrl, _ = build(
        params={"activations_quant_start_epoch": 1, "weights_quant_start_epoch": 1},
        initializer={"range": {"num_init_samples": 0}},
    )
    ctrl.scheduler.epoch_step()
    ctrl.scheduler.epoch_step()
    state = ctrl.get_compression_state()
    assert state["ctrl_state"]["quantization"]["scheduler_state"] == {"current_step": -1, "current_epoch": 1}
    config = NNCFConfig.from_dict(
        {
            "input_info": INFO,
            "compression": {"algorithm": "quantization", "params": {"activations_quant_start_epoch": 1}},
        }
    )
    resumed, _ = create_compressed_model(
        ResidualCNN(), config, compression_state=json.loads(json.dumps(state)), dump_graphs=False
    )
    assert resumed.compression_stage() == CompressionStage.FULLY_COMPRESSED
    assert all(q.is_enabled for q in resumed.all_quantizations.values())


def test_unstaged_quantization_is_fully_compressed_with_zero_loss():
    ctrl, _ = build(initializer={"range": {"num_init_samples": 0}})
    assert ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED
    assert ctrl.loss().item() == 0.0
    assert ctrl.compression_rate is None
    ctrl.distributed()  # single process: nothing to synchronize, must not fail


def test_statistics_counts(digits32):
    ctrl, _ = build(digits32[0])
    stats = ctrl.statistics().to_dict()["quantization"]
    assert stats["weight_quantizers"] == {
        "total": 10,
        "8_bits": 10,
        "enabled": 10,
        "per_channel": 10,
        "signed": 10,
        "symmetric": 10,
    }
    acts = stats["activation_quantizers"]
    assert acts["total"] == 14 and acts["signed"] + acts["unsigned"] == 14
    assert acts["unsigned"] >= 8  # ReLU outputs and the [0, 1] digits input are unsigned
    assert stats["ratio_of_enabled_quantizations"] == 1.0


def test_range_init_needs_a_loader_when_configured():
    with pytest.raises(CompressionError, match="asks for range initialization but no data loader"):
        build(initializer={"range": {"num_init_samples": 16}})
    with pytest.raises(CompressionError, match="batchnorm_adaptation is configured but no data loader"):
        build(initializer={"batchnorm_adaptation": {"num_bn_adaptation_samples": 16}})
    with pytest.raises(CompressionError, match="HAWQ precision initialization needs data and a loss"):
        build(initializer={"precision": {"type": "hawq"}})


def test_range_init_sets_scales_from_data(digits32):
    ctrl, _ = build(digits32[0], initializer={"range": {"num_init_samples": 128, "type": "min_max"}})
    inp = ctrl.non_weight_quantizers["/nncf_model_input_0|OUTPUT"]
    assert not inp.signed  # digits are in [0, 1]
    assert inp.scale.item() == pytest.approx(max(float(next(iter(digits32[0]))[0].max()), 0.1), rel=0.2)
    w = ctrl.weight_quantizers["ResidualCNN/Linear[fc]/linear_0|WEIGHT"]
    fc = ctrl.model.fc.parametrizations.weight.original
    torch.testing.assert_close(w.scale.detach().flatten(), fc.detach().abs().amax(1))


def test_batchnorm_adaptation_changes_running_stats(digits32):
    reference = ResidualCNN()
    _, model = build(
        digits32[0],
        initializer={"range": {"num_init_samples": 64}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 128}},
    )
    assert not torch.equal(model.stem[1].running_mean, reference.stem[1].running_mean)
    _, model = build(
        digits32[0],
        initializer={"range": {"num_init_samples": 64}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 0}},
    )
    assert torch.equal(model.stem[1].running_mean, reference.stem[1].running_mean)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("min_max", (-2.0, 9.0)),
        ("mean_min_max", (-1.5, 6.0)),
        ("percentile", (-2.0, 9.0)),
    ],
)
def test_collector_statistics(kind, expected):
    stats = StatCollector(axis=None)
    stats.update(torch.tensor([[-1.0, 0.0, 3.0]]), keep_values=True)
    stats.update(torch.tensor([[-2.0, 1.0, 9.0]]), keep_values=True)
    lo, hi = stats.min_max(kind, symmetric=False, params={"min_percentile": 0.0, "max_percentile": 100.0})
    assert (lo.item(), hi.item()) == pytest.approx(expected)


def test_threesigma_uses_median_and_mad():
    stats = StatCollector(axis=None)
    stats.update(torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]]), keep_values=True)
    lo, hi = stats.min_max("threesigma", symmetric=False, params={})
    # median 3, MAD 1 -> 3 -/+ 3 * 1.482623
    assert (lo.item(), hi.item()) == pytest.approx((3 - 4.447869, 3 + 4.447869), rel=1e-5)


@pytest.mark.parametrize("input_scale", [1e-4, 1.0])
def test_activation_ranges_fit_the_data_however_small(input_scale):
    """An activation quantizer's initial range is the data's, not at least 0.1 (NNCF's floor): data of
    1e-4 (squeeze-excitation gates of a random MobileNetV3) otherwise land on a few levels, mostly zero."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 10))
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": {"algorithm": "quantization"}}
    )
    x = torch.rand(4, 1, 8, 8) * input_scale
    register_default_init_args(config, [(x, torch.zeros(4, dtype=torch.long))])
    ctrl, _ = create_compressed_model(model, config, dump_graphs=False)
    q = ctrl.non_weight_quantizers["/nncf_model_input_0|OUTPUT"]
    per_sample_max = x.reshape(4, -1).amax(1).mean()  # mixed_min_max, the default statistic
    assert q.scale.item() == pytest.approx(per_sample_max.item(), rel=1e-6)
    with torch.no_grad():
        quantized = q(x)
    assert len(torch.unique(quantized)) > 100  # 256 values on 256 levels; at a 0.1 floor: 1 (all round to 0)
    torch.testing.assert_close(quantized, x.clamp(max=q.scale.item()), atol=input_scale / 255, rtol=0)


def test_activation_quantizer_with_all_zero_data_keeps_a_usable_range():
    """A dead ReLU's quantizer sees only zeros: its scale falls back to 0.1 instead of 0 (a zero step)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 10))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(-1.0)  # ReLU output is all zero
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 1, 8, 8]}, "compression": {"algorithm": "quantization"}}
    )
    register_default_init_args(config, [(torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))])
    ctrl, _ = create_compressed_model(model, config, dump_graphs=False)
    scales = {k: q.scale.item() for k, q in ctrl.non_weight_quantizers.items()}
    relu = next(k for k in scales if "ReLU" in k)
    assert scales[relu] == pytest.approx(0.1)
