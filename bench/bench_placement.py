"""Quantizer placement for onnxruntime vs NNCF's: the sample configs `int8` and `int8_onnxruntime`
on zoo CNNs with SiLU / Hardswish / Sigmoid (and MobileNetV2 as the control, which has none), FP32 /
INT8 latency in onnxruntime and OpenVINO, timed side by side (bench_runtime.side_by_side).

    python bench/bench_placement.py                                # about 10 min on 2 cores
    python bench/bench_placement.py --models efficientnet_b0 --batch 8
Writes bench/results/placement.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from bench_runtime import RESULTS, build_model, input_names, machine, make_input, sample_shape, side_by_side
from torch import nn

from squeezer.runtime import RUNTIMES, load_runner

CONFIGS = {"nncf": "int8", "onnxruntime": "int8_onnxruntime"}
MODELS = [
    "efficientnet_b0",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_lite0",
    "mobilenet_v2",
    "resnet18",
]


def int8_export(model: nn.Module, name: str, sample: str, calibration: list[torch.Tensor], out: Path) -> Path:
    from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
    from squeezer.examples.configs import sample_config_path

    shape, _ = sample_shape(name)
    data = dict(NNCFConfig.from_json(sample_config_path(sample)))
    data["input_info"] = {"sample_size": [1, *shape]}
    data["compression"]["initializer"] = {
        "range": {"num_init_samples": sum(len(x) for x in calibration)},
        "batchnorm_adaptation": {"num_bn_adaptation_samples": 0},
    }
    config = NNCFConfig.from_dict(data)
    register_default_init_args(
        config, [(x, torch.zeros(len(x), dtype=torch.long)) for x in calibration], criterion=nn.CrossEntropyLoss()
    )
    ctrl, _ = create_compressed_model(model, config, dump_graphs=False)
    return ctrl.export_model(out, verify=False)  # latency only; parity is the zoo's and the tests' job


def bench_model(name: str, batch: int, rounds: int, seconds: float, threads: int) -> dict[str, Any]:
    from squeezer import export_onnx

    model = build_model(name)
    calibration = [make_input(name, 8, seed) for seed in range(4)]
    x = make_input(name, batch, 99)
    with tempfile.TemporaryDirectory() as tmp:
        files = {"fp32": export_onnx(model, Path(tmp) / "fp32.onnx", (x[:1],), verify=False)}
        for variant, sample in CONFIGS.items():
            files[variant] = int8_export(model, name, sample, calibration, Path(tmp) / f"{variant}.onnx")
        feed = {input_names(files["fp32"])[0]: x.numpy()}
        result: dict[str, Any] = {"model": name, "batch": batch}
        for runtime in RUNTIMES:
            runners = {k: load_runner(p, runtime, threads=threads) for k, p in files.items()}
            result[runtime] = side_by_side(runners, feed, rounds, seconds)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = [bench_model(m, args.batch, args.rounds, args.seconds, args.threads) for m in args.models.split(",")]
    print(f"FP32 / INT8 latency (> 1: INT8 faster), batch {args.batch}, {args.threads} threads, 224x224")
    header = [f"{rt}: {v} placement" for rt in RUNTIMES for v in CONFIGS]
    print("| model | " + " | ".join(header) + " |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[rt]['speedup'][v]:.2f}x" for rt in RUNTIMES for v in CONFIGS]
        print(f"| {r['model']} | " + " | ".join(cells) + " |")
    out = RESULTS / "placement.json"
    fresh = {(r["model"], r["batch"]) for r in rows}
    previous = json.loads(out.read_text())["rows"] if out.exists() else []
    rows = [r for r in previous if (r["model"], r["batch"]) not in fresh] + rows  # a subset run merges
    out.write_text(json.dumps({"machine": machine(), "threads": args.threads, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    from squeezer.examples.zoo import prepare_torchvision

    prepare_torchvision()
    main()
