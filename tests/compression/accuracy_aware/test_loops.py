"""Accuracy-aware loops: NNCF's search trajectory step by step, early exit rules, never losing the
best model, statistics, and resuming a killed run in a fresh process."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch

from squeezer import (
    CompressionStage,
    ConfigError,
    NNCFConfig,
    create_accuracy_aware_training_loop,
    create_compressed_model,
)
from squeezer.examples.models import MLP
from tests.compression.accuracy_aware import job


def build(compression, aa):
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 64]}, "compression": compression, "accuracy_aware_training": aa}
    )
    ctrl, model = create_compressed_model(MLP(), config, dump_graphs=False)
    return config, ctrl, model


def no_training(ctrl, model, epoch, optimizer, lr_scheduler=None):
    return 0.0


def sgd(model):
    return lambda: torch.optim.SGD(model.parameters(), lr=0.1)


def test_adaptive_search_trajectory_matches_the_spec():
    """metric = 90 + 40 * (0.26 - rate): the budget (>= 90) holds up to rate 0.26."""
    config, ctrl, model = build(
        {"algorithm": "magnitude_sparsity", "params": {"sparsity_target": 0.1, "sparsity_target_epoch": 0}},
        {
            "mode": "adaptive_compression_level",
            "params": {
                "maximal_absolute_accuracy_degradation": 10,
                "initial_training_phase_epochs": 3,
                "patience_epochs": 2,
                "maximal_total_epochs": 50,
            },
        },
    )
    records = []
    loop = create_accuracy_aware_training_loop(config, ctrl, 100.0, on_epoch_end=records.append)
    assert loop.adaptive_ctrl is ctrl

    def validate(model, epoch):
        return 90 + 40 * (0.26 - ctrl.compression_rate)

    loop.run(model, no_training, validate, configure_optimizers_fn=sgd(model))
    search = [(r.compression_rate_target, r.lr) for r in records if r.phase == "search"]
    targets = [round(t, 4) for t, _ in search]
    lrs = [round(lr, 5) for _, lr in search]
    # phase 1 ends at epoch 1 (rate 0.1 within budget); then: up 0.1 twice, no progress at 0.3 for
    # 2 epochs -> down with half step (0.05) and half LR, up (0.025, LR/4), down (0.0125 < minimal step)
    assert [r.phase for r in records[:2]] == ["initial", "initial"] and records[1].metric == pytest.approx(96.4)
    assert targets == [0.2, 0.3, 0.3, 0.25, 0.275, 0.275, 0.2625]
    assert lrs == [0.1, 0.1, 0.1, 0.05, 0.025, 0.025, 0.0125]
    assert loop.step == pytest.approx(0.0125)
    stats = loop.statistics
    assert stats.compression_rate == pytest.approx(0.25) and stats.compressed_accuracy == pytest.approx(90.4)
    assert stats.result == "fully_compressed_within_budget" and stats.accuracy_budget >= 0
    assert ctrl.compression_rate == pytest.approx(0.25)  # the returned model's rate, and the ctrl still works
    assert ctrl.compression_stage() == CompressionStage.FULLY_COMPRESSED
    assert ctrl.statistics().magnitude_sparsity["sparsity_level_for_sparsified_layers"] == pytest.approx(0.25, abs=1e-3)


def test_adaptive_mode_stops_at_maximal_total_epochs_even_in_its_initial_phase():
    """The total is the total: a service job's epochs are capped at it (worker/execute.py refuses more)."""
    config, ctrl, model = build(
        {"algorithm": "magnitude_sparsity", "params": {"sparsity_target": 0.1, "sparsity_target_epoch": 0}},
        {
            "mode": "adaptive_compression_level",
            "params": {
                "maximal_absolute_accuracy_degradation": 1,
                "initial_training_phase_epochs": 5,
                "patience_epochs": 1,
                "maximal_total_epochs": 2,
            },
        },
    )
    records = []
    loop = create_accuracy_aware_training_loop(config, ctrl, 100.0, on_epoch_end=records.append)
    loop.run(model, no_training, lambda model, epoch: 50.0, configure_optimizers_fn=sgd(model))  # never in budget
    assert [r.epoch for r in records] == [0, 1, 2]


def test_early_exit_stops_at_the_first_fully_compressed_epoch_in_budget():
    config, ctrl, model = build(
        {
            "algorithm": "magnitude_sparsity",
            "params": {"schedule": "multistep", "multistep_steps": [2], "multistep_sparsity_levels": [0.2, 0.5]},
        },
        {"mode": "early_exit", "params": {"maximal_relative_accuracy_degradation": 1.0, "maximal_total_epochs": 10}},
    )
    records = []
    loop = create_accuracy_aware_training_loop(config, ctrl, 100.0, on_epoch_end=records.append)
    loop.run(model, no_training, lambda model, epoch: 99.5, configure_optimizers_fn=sgd(model))
    # within budget from the start, but fully compressed only from the 3rd epoch (index 2)
    assert [(r.epoch, r.stage) for r in records] == [
        (0, "UNCOMPRESSED"),
        (1, "PARTIALLY_COMPRESSED"),
        (2, "PARTIALLY_COMPRESSED"),
        (3, "FULLY_COMPRESSED"),
    ]
    assert set(records[0].to_dict()) == {
        "epoch",
        "phase",
        "compression_rate_target",
        "compression_rate",
        "stage",
        "metric",
        "accuracy_budget",
        "loss",
        "lr",
        "wall_time_s",
    }
    assert records[-1].accuracy_budget == pytest.approx(0.5) and records[-1].lr == 0.1
    assert loop.statistics.compression_rate == 0.5 and loop.statistics.epochs == 3


def test_early_exit_with_quantization_runs_to_the_limit_when_impossible(caplog):
    config, ctrl, model = build(
        {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}},
        {"mode": "early_exit", "params": {"maximal_absolute_accuracy_degradation": 0.1, "maximal_total_epochs": 4}},
    )
    metrics = iter([80.0, 85.0, 88.0, 86.0, 84.0])
    loop = create_accuracy_aware_training_loop(config, ctrl, 100.0)
    with caplog.at_level(logging.WARNING):
        returned = loop.run(model, no_training, lambda model, epoch: next(metrics), configure_optimizers_fn=sgd(model))
    stats = loop.statistics
    assert stats.epochs == 4 and stats.result == "budget_not_met"
    assert stats.compressed_accuracy == 88.0  # the best epoch is returned, not the last one
    assert "no fully compressed model met the accuracy budget" in caplog.text
    assert returned(torch.rand(2, 64)).shape == (2, 10)


@pytest.mark.parametrize("losses", [[2.3, 1.9, float("nan")], [2.3, 1.9, 1.5e23], [2.3, 1.9, float("inf")]])
def test_a_diverging_loss_stops_the_loop_with_the_best_earlier_checkpoint(losses, caplog):
    """NaN, infinite or exploded (1.5e23 was seen with lr 10): later epochs would train noise, so the loop
    stops and returns what it had; the statistics say so. A large but healthy loss is not divergence."""
    config, ctrl, model = build(
        {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}},
        {"mode": "early_exit", "params": {"maximal_absolute_accuracy_degradation": 1.0, "maximal_total_epochs": 6}},
    )
    epochs = iter(losses)
    metrics = iter([97.0, 98.5, 98.0, 50.0])  # the budget (floor 99) is never met: the best epoch is 1
    records = []
    loop = create_accuracy_aware_training_loop(config, ctrl, 100.0, on_epoch_end=records.append)
    first_weight = None

    def train(ctrl, model, epoch, optimizer, lr_scheduler=None):
        nonlocal first_weight
        with torch.no_grad():
            weight = next(iter(model.parameters()))
            first_weight = first_weight if first_weight is not None else weight.clone()
            weight.add_(1e6 if epoch == 2 else 0.0)  # what a diverging step does to the weights
        return next(epochs)

    with caplog.at_level(logging.WARNING):
        returned = loop.run(model, train, lambda model, epoch: next(metrics), configure_optimizers_fn=sgd(model))
    assert [r.epoch for r in records] == [0, 1, 2]  # the diverged epoch is not offered, and nothing after it runs
    assert "loss diverged at epoch 3" in loop.statistics.diverged and "loss diverged at epoch 3" in caplog.text
    assert loop.statistics.returned_epoch == 1 and loop.statistics.compressed_accuracy == 98.5
    assert torch.equal(next(iter(returned.parameters())), first_weight)  # epoch 1's weights, not the blown-up ones


def test_a_large_but_steady_loss_is_not_divergence():
    config, ctrl, model = build(
        {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}},
        {"mode": "early_exit", "params": {"maximal_absolute_accuracy_degradation": 0.0, "maximal_total_epochs": 3}},
    )
    losses = iter([3e6, 9e6, 2e6])  # a regression on raw targets
    loop = create_accuracy_aware_training_loop(config, ctrl, 100.0)
    loop.run(model, lambda *a, **k: next(losses), lambda model, epoch: 90.0, configure_optimizers_fn=sgd(model))
    assert loop.statistics.diverged is None and loop.statistics.epochs == 3


def test_partially_compressed_fallback_never_crashes():
    config, ctrl, model = build(
        {"algorithm": "magnitude_sparsity", "params": {"sparsity_target": 0.5, "sparsity_target_epoch": 50}},
        {"mode": "early_exit", "params": {"maximal_absolute_accuracy_degradation": 1, "maximal_total_epochs": 3}},
    )
    loop = create_accuracy_aware_training_loop(config, ctrl, 100.0)
    loop.run(model, no_training, lambda model, epoch: 99.5, configure_optimizers_fn=sgd(model))
    stats = loop.statistics
    assert stats.result == "partially_compressed_within_budget"  # never fully compressed in 3 epochs
    assert stats.compression_rate > 0  # the highest rate reached (NNCF crashes here, or reports 0.0)
    assert stats.compression_rate == pytest.approx(ctrl.compression_rate)
    assert ctrl.compression_stage() == CompressionStage.PARTIALLY_COMPRESSED


def test_adaptive_mode_checks_its_algorithms():
    aa = {
        "mode": "adaptive_compression_level",
        "params": {
            "maximal_relative_accuracy_degradation": 1,
            "initial_training_phase_epochs": 1,
            "patience_epochs": 1,
        },
    }
    config, ctrl, _ = build({"algorithm": "quantization"}, aa)
    with pytest.raises(ConfigError, match=r"needs one of \['magnitude_sparsity', 'rb_sparsity', 'filter_pruning'\]"):
        create_accuracy_aware_training_loop(config, ctrl, 90.0)
    config, ctrl, _ = build([{"algorithm": "filter_pruning"}, {"algorithm": "magnitude_sparsity"}], aa)
    with pytest.raises(ConfigError, match="use filter_pruning or a sparsity algorithm, not both"):
        create_accuracy_aware_training_loop(config, ctrl, 90.0)
    config, ctrl, _ = build([{"algorithm": "quantization"}, {"algorithm": "magnitude_sparsity"}], aa)
    loop = create_accuracy_aware_training_loop(config, ctrl, 90.0)
    assert loop.adaptive_ctrl.name == "magnitude_sparsity"
    config = NNCFConfig.from_dict({"compression": []})
    with pytest.raises(ConfigError, match="no accuracy_aware_training section"):
        create_accuracy_aware_training_loop(config, ctrl, 90.0)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["magnitude", "pruning"])
def test_adaptive_search_finds_a_higher_rate_within_budget_on_digits(algorithm):
    result = job.run(algorithm, state_path=None)
    start = 0.5 if algorithm == "magnitude" else 0.25  # where the user's schedule ends
    assert result["rate"] > start
    assert result["result"] == "fully_compressed_within_budget"
    assert result["metric"] >= result["reference"] - 1.5
    assert result["final_accuracy"] == pytest.approx(result["metric"])  # the returned model is that checkpoint
    assert result["ctrl_rate"] == pytest.approx(result["rate"])


@pytest.mark.slow
def test_killed_run_resumes_in_a_fresh_process_to_the_same_result(tmp_path):
    expected = job.run("pruning", state_path=str(tmp_path / "uninterrupted.pt"))
    state = str(tmp_path / "state.pt")
    cmd = [sys.executable, "-m", "tests.compression.accuracy_aware.job", "pruning", state]
    crashed = subprocess.run([*cmd, "--crash-at", "5"], capture_output=True, text=True, timeout=300)
    assert crashed.returncode == 3, crashed.stderr  # killed during epoch 5, state of epoch 4 on disk
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["rate"] == expected["rate"] and result["metric"] == expected["metric"]
    assert result["records"] == [list(r) for r in expected["records"]]
