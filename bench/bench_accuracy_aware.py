"""Adaptive compression level with filter pruning on the residual CNN (digits 1x32x32): final rate,
accuracy, epochs and wall time. Prints a table and writes bench/results/accuracy_aware.json.

    python bench/bench_accuracy_aware.py
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from squeezer import NNCFConfig, create_accuracy_aware_training_loop, create_compressed_model
from squeezer.examples.digits import accuracy, digits_loaders, train_epoch
from squeezer.examples.models import ResidualCNN

RESULTS = Path(__file__).parent / "results"
CONFIG = {
    "input_info": {"sample_size": [1, 1, 32, 32]},
    "compression": {
        "algorithm": "filter_pruning",
        "pruning_init": 0.1,
        "params": {
            "schedule": "exponential",
            "pruning_target": 0.4,
            "pruning_steps": 3,
            "filter_importance": "geometric_median",
            "prune_first_conv": True,
            "prune_downsample_convs": True,
        },
    },
    "accuracy_aware_training": {
        "mode": "adaptive_compression_level",
        "params": {
            "maximal_relative_accuracy_degradation": 1.0,
            "initial_training_phase_epochs": 3,
            "patience_epochs": 2,
            "maximal_total_epochs": 11,
        },
    },
}


def main() -> None:
    torch.manual_seed(0)
    train, val = digits_loaders(image_size=32, batch_size=64)
    fp32 = ResidualCNN()
    optimizer = torch.optim.Adam(fp32.parameters(), lr=3e-3)
    for _ in range(8):  # as in bench_quantization: a well-trained FP32 reference
        train_epoch(fp32, train, optimizer)
    reference = accuracy(fp32, val)

    start = time.perf_counter()
    config = NNCFConfig.from_dict(CONFIG)
    ctrl, model = create_compressed_model(fp32, config, dump_graphs=False)
    loop = create_accuracy_aware_training_loop(config, ctrl, reference)
    model = loop.run(
        model,
        train_epoch_fn=lambda ctrl, model, epoch, optimizer, lr_scheduler=None: train_epoch(
            model, train, optimizer, ctrl
        ),
        validate_fn=lambda model, epoch: accuracy(model, val),
        configure_optimizers_fn=lambda: torch.optim.Adam(model.parameters(), lr=1e-3),
    )
    wall = time.perf_counter() - start
    stats = loop.statistics
    assert stats is not None
    pruning = ctrl.statistics().filter_pruning
    result = {
        "model": "ResidualCNN (digits 1x32x32), filter pruning, adaptive compression level",
        "fp32_accuracy": reference,
        "final_pruning_rate": stats.compression_rate,
        "final_accuracy": stats.compressed_accuracy,
        "returned": stats.result,
        "epochs": stats.epochs,
        "wall_time_s": wall,
        "flops_reduction": pruning["model_FLOPS_pruning_level"],
        "params_reduction": pruning["model_params_pruning_level"],
        "nncf_2_19_reference": {"rate": 0.9, "epochs": 11, "wall_time_s": 25, "flops_reduction": 0.66},
        "machine": {"cpu": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__},
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "accuracy_aware.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:<24} {value:.4f}" if isinstance(value, float) else f"{key:<24} {value}")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
