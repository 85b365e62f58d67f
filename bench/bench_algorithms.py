"""Sparsity, pruning and distillation benchmark: training step cost per algorithm, and what filter
pruning really removes (parameters, FLOPs, ONNX size, onnxruntime latency).

Measured side by side in one run (interleaved rounds, medians). Prints a table and writes
bench/results/algorithms.json.

    python bench/bench_algorithms.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from bench_quantization import interleaved, train_step

from squeezer import NNCFConfig, create_compressed_model, export_onnx, register_default_init_args
from squeezer.examples.digits import digits_loaders
from squeezer.examples.models import ResidualCNN

RESULTS = Path(__file__).parent / "results"
INPUT = {"sample_size": [1, 1, 32, 32]}
ALL_LAYERS = {"prune_first_conv": True, "prune_downsample_convs": True}
ALGORITHMS: dict[str, Any] = {
    "magnitude_sparsity": {"algorithm": "magnitude_sparsity", "sparsity_init": 0.5},
    "rb_sparsity": {"algorithm": "rb_sparsity", "sparsity_init": 0.5},
    "const_sparsity": {"algorithm": "const_sparsity"},
    "filter_pruning": {"algorithm": "filter_pruning", "pruning_init": 0.3, "params": ALL_LAYERS},
    "knowledge_distillation": {"algorithm": "knowledge_distillation", "type": "softmax"},
}


def compress(model: torch.nn.Module, section: Any, loader: Any) -> tuple[Any, torch.nn.Module]:
    config = register_default_init_args(NNCFConfig.from_dict({"input_info": INPUT, "compression": section}), loader)
    return create_compressed_model(model, config, dump_graphs=False)


def step_costs(train: Any, rounds: int) -> dict[str, float]:
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 32, 32), torch.randint(0, 10, (64,))
    steps = {"fp32": train_step(ResidualCNN(), x, y)}
    for name, section in ALGORITHMS.items():
        ctrl, model = compress(ResidualCNN(), section, train)
        step = train_step(model, x, y)

        def with_loss(step: Any = step, ctrl: Any = ctrl) -> None:
            step()
            ctrl.loss()  # RB's density loss and KD's loss are part of every step

        steps[name] = with_loss
    times = interleaved(steps, rounds=rounds, reps=3)
    return {name: t / times["fp32"] for name, t in times.items() if name != "fp32"} | {"fp32_ms": times["fp32"] * 1000}


def pruning_effect(train: Any, rounds: int, tmpdir: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    base = ResidualCNN(width=64)
    x = torch.rand(64, 1, 32, 32)
    paths = {"unpruned": export_onnx(base, tmpdir / "unpruned.onnx", (x[:1],), verify_inputs=((x,), {}))}
    result: dict[str, Any] = {}
    for level in (0.3, 0.5):
        section = {
            "algorithm": "filter_pruning",
            "pruning_init": level,
            "params": {**ALL_LAYERS, "pruning_target": level},
        }
        ctrl, _ = compress(base, section, train)
        stats = ctrl.statistics().filter_pruning
        paths[f"pruned_{level}"] = ctrl.export_model(tmpdir / f"pruned_{level}.onnx")
        result[f"pruned_{level}"] = {
            "params_ratio": stats["params"]["current"] / stats["params"]["full"],
            "flops_ratio": stats["flops"]["current"] / stats["flops"]["full"],
            "stripped_params": sum(p.numel() for p in ctrl.strip().parameters()),
        }
    sessions = {k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for k, p in paths.items()}
    for batch in (1, 64):
        feed = {"input.0": np.random.rand(batch, 1, 32, 32).astype(np.float32)}
        lat = interleaved(
            {k: (lambda s=s, feed=feed: s.run(None, feed)) for k, s in sessions.items()},
            rounds=rounds,
            reps=10 if batch == 1 else 2,
        )
        for key in result:
            result[key][f"ort_latency_ratio_b{batch}"] = lat[key] / lat["unpruned"]
    for key in result:
        result[key]["onnx_size_ratio"] = os.path.getsize(paths[key]) / os.path.getsize(paths["unpruned"])
    result["unpruned_params"] = sum(p.numel() for p in base.parameters())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    train, _ = digits_loaders(image_size=32, batch_size=64)
    with tempfile.TemporaryDirectory() as tmp:
        result: dict[str, Any] = {
            "model": "ResidualCNN (digits 1x32x32, batch 64); pruning on the 4x wider variant (64-256 channels)",
            "train_step_ratio_vs_fp32": step_costs(train, args.rounds),
            "filter_pruning": pruning_effect(train, args.rounds, Path(tmp)),
        }
    result["machine"] = {"cpu": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "algorithms.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'metric':<58} value")
    for section in ("train_step_ratio_vs_fp32", "filter_pruning"):
        for key, value in result[section].items():
            if isinstance(value, dict):
                for sub, v in value.items():
                    print(
                        f"{section + '.' + key + '.' + sub:<58} {v:.3f}"
                        if isinstance(v, float)
                        else f"{section + '.' + key + '.' + sub:<58} {v}"
                    )
            else:
                print(
                    f"{section + '.' + key:<58} {value:.3f}" if isinstance(value, float) else f"{section}.{key} {value}"
                )
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
