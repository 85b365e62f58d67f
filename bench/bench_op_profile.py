"""Where the time goes: onnxruntime's optimized graph and per-op-type kernel time for one zoo CNN's
FP32 file, Squeezer's INT8 files (NNCF's placement, "target_runtime": "onnxruntime") and
`quantize_static`'s, so a ratio in bench_placement's table can be traced to the kernels behind it
(which ops stay FP32 between a DequantizeLinear and a QuantizeLinear, which run as QLinear kernels).

    python bench/bench_op_profile.py --models efficientnet_b0,mobilenet_v3_small
Writes bench/results/op_profile.json (merged by model). Kernel times come from onnxruntime's profiler
(SessionOptions.enable_profiling), summed per op type and averaged per run; the profiler adds its own
overhead, so compare the columns of one run rather than with bench_placement's latencies.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import onnx
import torch
from bench_placement import CONFIGS, int8_export
from bench_runtime import RESULTS, build_model, machine, make_input

from squeezer.examples.ptq_check import ort_ptq


def profile(path: Path, x: torch.Tensor, runs: int, threads: int, folder: Path) -> dict[str, Any]:
    """Op counts of onnxruntime's optimized graph and kernel milliseconds per op type per run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.optimized_model_filepath = str(folder / f"{path.stem}.optimized.onnx")
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / path.stem)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    for _ in range(runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    micros: Counter[str] = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            micros[event["args"]["op_name"]] += event["dur"]
    ops = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    ms = {op: round(us / runs / 1000, 3) for op, us in micros.most_common()}
    return {"ops": dict(ops.most_common()), "kernel_ms": ms, "total_ms": round(sum(ms.values()), 3)}


def profile_model(name: str, runs: int, threads: int) -> dict[str, Any]:
    from squeezer import export_onnx

    model = build_model(name)
    calibration = [make_input(name, 8, seed) for seed in range(4)]  # as bench_placement
    x = make_input(name, 1, 99)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {"fp32": export_onnx(model, folder / "fp32.onnx", (x,), verify=False)}
        for variant, sample in CONFIGS.items():
            files[variant] = int8_export(model, name, sample, calibration, folder / f"{variant}.onnx")
        files["ort_ptq"] = ort_ptq(files["fp32"], calibration, folder / "ort_ptq.onnx")
        return {k: profile(p, x, runs, threads, folder) for k, p in files.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="efficientnet_b0")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    out = RESULTS / "op_profile.json"
    saved = json.loads(out.read_text())["models"] if out.exists() else {}
    torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        saved[name] = profile_model(name, args.runs, args.threads)
        print(f"== {name} (batch 1, {args.threads} threads; kernel ms per run from the profiler)")
        for variant, p in saved[name].items():
            top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(p["kernel_ms"].items())[:8])
            print(f"  {variant:12} total {p['total_ms']:7.2f} ms | {top}")
            print(f"  {'':12} ops: {p['ops']}")
        out.write_text(json.dumps({"machine": machine(), "threads": args.threads, "models": saved}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    from squeezer.examples.zoo import prepare_torchvision

    prepare_torchvision()
    main()
