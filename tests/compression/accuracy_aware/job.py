"""A deterministic accuracy-aware run on digits, used by the tests in this process and in fresh ones.

python -m tests.compression.accuracy_aware.job <mode> <state_path> [--crash-at K] [--resume]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

from squeezer import NNCFConfig, create_accuracy_aware_training_loop, create_compressed_model
from squeezer.examples.digits import accuracy, digits_tensors
from squeezer.examples.models import MLP

SECTIONS = {
    "magnitude": {
        "algorithm": "magnitude_sparsity",
        "sparsity_init": 0.3,
        "params": {"schedule": "multistep", "multistep_steps": [1], "multistep_sparsity_levels": [0.3, 0.5]},
    },
    "pruning": {
        "algorithm": "filter_pruning",
        "pruning_init": 0.1,
        "params": {"prune_first_conv": True, "schedule": "baseline", "pruning_target": 0.25},
    },
}


def data():
    x, y = digits_tensors(image_size=None)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    return (x[perm[450:]], y[perm[450:]]), (x[perm[:450]], y[perm[:450]])


def trained_mlp(train):
    torch.manual_seed(0)
    model = MLP(hidden=64)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = train
    for epoch in range(8):
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(100 + epoch))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def run(
    algorithm: str,
    state_path: str | None,
    crash_at: int | None = None,
    resume: bool = False,
    records: list | None = None,
) -> dict:
    train, val = data()
    fp32 = trained_mlp(train)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*val), batch_size=256)
    reference = accuracy(fp32, loader)
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 64]},
            "compression": SECTIONS[algorithm],
            "accuracy_aware_training": {
                "mode": "adaptive_compression_level",
                "params": {
                    "maximal_absolute_accuracy_degradation": 1.5,
                    "initial_training_phase_epochs": 2,
                    "patience_epochs": 2,
                    "maximal_total_epochs": 12,
                    "initial_compression_rate_step": 0.15,
                },
            },
        }
    )
    ctrl, model = create_compressed_model(fp32, config, dump_graphs=False)

    def train_epoch_fn(compression_ctrl, model, epoch, optimizer, lr_scheduler=None):
        model.train()
        x, y = train
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))  # order fixed by epoch
        total = 0.0
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            compression_ctrl.scheduler.step()
            loss = F.cross_entropy(model(x[idx]), y[idx]) + compression_ctrl.loss()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        return total

    def validate_fn(model, epoch):
        return accuracy(model, loader)

    def on_epoch_end(record):
        if records is not None:
            records.append(record)
        if crash_at is not None and record.epoch == crash_at:
            os._exit(3)  # a killed process: nothing after this epoch's validation survives

    loop = create_accuracy_aware_training_loop(
        config, ctrl, reference, on_epoch_end=on_epoch_end, state_path=state_path
    )
    if resume:
        loop.load_state(state_path)
    model = loop.run(
        model,
        train_epoch_fn,
        validate_fn,
        configure_optimizers_fn=lambda: torch.optim.Adam(model.parameters(), lr=1e-3),
    )
    stats = loop.statistics
    return {
        "reference": reference,
        "rate": stats.compression_rate,
        "metric": stats.compressed_accuracy,
        "result": stats.result,
        "epochs": stats.epochs,
        "final_accuracy": accuracy(model, loader),
        "ctrl_rate": ctrl.compression_rate,
        "records": [(r.epoch, r.compression_rate_target, r.metric) for r in loop.records],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("algorithm")
    parser.add_argument("state_path")
    parser.add_argument("--crash-at", type=int)
    parser.add_argument("--resume", action="store_true")
    a = parser.parse_args()
    print(json.dumps(run(a.algorithm, a.state_path, a.crash_at, a.resume)))
    sys.stdout.flush()
