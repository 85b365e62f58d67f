"""Quantizer placement per runtime on the zoo CNNs: FP32, Squeezer INT8 with the sample configs
`int8` (NNCF's placement) and `int8_onnxruntime` ("target_runtime": "onnxruntime"), and onnxruntime's
`quantize_static` of the FP32 file (the yardstick, squeezer.examples.ptq_check.ort_ptq) on the same
calibration batches, timed side by side (bench_runtime.side_by_side) in onnxruntime and OpenVINO.

Verdict per model, for the target "Squeezer INT8 no slower than quantize_static in onnxruntime, and
INT8 faster than FP32 in at least one runtime": `vs_ptq` compares the onnxruntime placement's FP32/INT8
ratio with quantize_static's in the same rounds (a ratio of ratios, so the machine's load cancels;
"tie" within 5%, or where both files' onnxruntime-optimized graphs have the same compute kernels,
which leaves only the machine's noise between them); `int8_wins` names the runtimes where Squeezer's
INT8 (onnxruntime placement in onnxruntime, NNCF's in OpenVINO, each runtime's recommended config)
beats FP32.

    python bench/bench_placement.py                                # all CNNs, about 30 min on 2 cores
    python bench/bench_placement.py --models efficientnet_b0 --batch 8
Writes bench/results/placement.json (rows merged by model and batch).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from bench_runtime import RESULTS, build_model, input_names, machine, make_input, sample_shape, side_by_side
from torch import nn

from squeezer.examples.ptq_check import ort_ptq
from squeezer.examples.zoo import BENCHMARK_CNNS
from squeezer.runtime import RUNTIMES, load_runner

CONFIGS = {"nncf": "int8", "onnxruntime": "int8_onnxruntime"}
RECOMMENDED = {"onnxruntime": "onnxruntime", "openvino": "nncf"}  # the placement to use per runtime
TIE = 0.95  # ratios within 5% of each other: the spread of one model's rounds on a shared machine
MODELS = list(BENCHMARK_CNNS)


def int8_export(model: nn.Module, name: str, sample: str, calibration: list[torch.Tensor], out: Path) -> Path:
    from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
    from squeezer.compression.config.samples import sample_config_path

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
        files["ort_ptq"] = ort_ptq(files["fp32"], calibration, Path(tmp) / "ort_ptq.onnx")
        feed = {input_names(files["fp32"])[0]: x.numpy()}
        result: dict[str, Any] = {"model": name, "batch": batch}
        result["onnxruntime_kernels"] = {k: optimized_kernels(p, Path(tmp)) for k, p in files.items()}
        for runtime in RUNTIMES:
            runners = {k: load_runner(p, runtime, threads=threads) for k, p in files.items()}
            result[runtime] = side_by_side(runners, feed, rounds, seconds)
    result["verdict"] = verdict(result)
    return result


_GLUE = {"QuantizeLinear", "DequantizeLinear", "Transpose", "Flatten"}  # layout and (de)quantization


def optimized_kernels(path: Path, folder: Path) -> dict[str, int]:
    """Compute ops of onnxruntime's optimized graph (QLinearConv, Conv, QLinearMul, Sigmoid, ...)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(folder / f"{path.stem}.optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    return {op: n for op, n in sorted(ops.items()) if op not in _GLUE}


def verdict(row: dict[str, Any]) -> dict[str, Any]:
    """The target's two parts for one model (see the module docstring). Where Squeezer's optimized
    graph has the same compute kernels as quantize_static's, a latency difference is the machine's
    noise, and the comparison counts as a tie."""
    ort = row["onnxruntime"]["speedup"]
    vs_ptq = ort["onnxruntime"] / ort["ort_ptq"]
    kernels = row["onnxruntime_kernels"]
    same = kernels["onnxruntime"] == kernels["ort_ptq"]
    wins = [rt for rt in RUNTIMES if row[rt]["speedup"][RECOMMENDED[rt]] > 1.0]
    label = "faster" if vs_ptq >= 1.0 else "tie" if vs_ptq >= TIE or same else "slower"
    return {
        "squeezer_vs_ptq_onnxruntime": round(vs_ptq, 3),
        "same_kernels_as_ptq": same,
        "vs_ptq": label,
        "int8_wins": wins,
        "met": label != "slower" and bool(wins),
    }


def print_table(rows: list[dict[str, Any]], batch: int, threads: int) -> None:
    print(f"FP32 / INT8 latency (> 1: INT8 faster), batch {batch}, {threads} threads, 224x224; ms: FP32")
    variants = [*CONFIGS, "ort_ptq"]
    header = [f"{rt} FP32 ms" if v == "ms" else f"{rt} {v}" for rt in RUNTIMES for v in ("ms", *variants)]
    print("| model | " + " | ".join(header) + " | Squeezer / PTQ (ORT) | INT8 beats FP32 in | target |")
    print("|---" * (len(header) + 4) + "|")
    for r in rows:
        cells = [
            f"{r[rt]['ms']['fp32']:.2f}" if v == "ms" else f"{r[rt]['speedup'][v]:.2f}x"
            for rt in RUNTIMES
            for v in ("ms", *variants)
        ]
        v = r["verdict"]
        wins = ", ".join(v["int8_wins"]) or "neither"
        status = "met" if v["met"] else "not met"
        print(
            f"| {r['model']} | " + " | ".join(cells) + f" | {v['squeezer_vs_ptq_onnxruntime']:.2f} ({v['vs_ptq']}"
            f"{', same kernels' if v['same_kernels_as_ptq'] else ''}) "
            f"| {wins} | {status} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "placement.json")
    args = parser.parse_args()
    out = args.out
    previous = json.loads(out.read_text())["rows"] if out.exists() else []
    previous = [r for r in previous if "verdict" in r]  # rows from before the yardstick was measured
    rows: list[dict[str, Any]] = []
    for name in args.models.split(","):
        rows.append(bench_model(name, args.batch, args.rounds, args.seconds, args.threads))
        print_table(rows[-1:], args.batch, args.threads)
        fresh = {(r["model"], r["batch"]) for r in rows}
        merged = [r for r in previous if (r["model"], r["batch"]) not in fresh] + rows  # a subset run merges
        out.write_text(json.dumps({"machine": machine(), "threads": args.threads, "rows": merged}, indent=1))
    print()
    print_table(rows, args.batch, args.threads)
    print(f"wrote {out}")


if __name__ == "__main__":
    from squeezer.examples.zoo import prepare_torchvision

    prepare_torchvision()
    main()
