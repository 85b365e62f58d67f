"""Runtime benchmark on real models: FP32 ONNX vs Squeezer's INT8 export vs onnxruntime's own
`quantize_static` of the same FP32 file, in onnxruntime and in OpenVINO (which runs the QDQ file as is).

Per model: random-init zoo architecture, BatchNorm statistics from a few batches (as
`squeezer.examples.zoo_check` does), then
- fp32:     `squeezer.export_onnx` of the model;
- squeezer: `create_compressed_model` with the sample config `int8.json` (symmetric per-channel weights,
            per-tensor activations, min-max range init) on the calibration batches, no training, no BN
            adaptation (it would change the model the others are compared with), `ctrl.export_model`;
- ort_ptq:  `onnxruntime.quantization.quantize_static` of the fp32 file (QDQ, per-channel int8 weights,
            uint8 activations, min-max) on the same calibration batches.
Latency at 2 threads, batch 1 and 8: the three variants of one model are timed round by round in a
rotating order (the machine is shared and noisy); a ratio is the median over rounds of FP32 / variant
within the round (> 1: faster than FP32). Parity: max |variant - fp32| / max |fp32| in onnxruntime on a
held-out batch. Size: file bytes / FP32 file bytes.

    python bench/bench_runtime.py                                # all models below, about 30 min on 2 cores
    python bench/bench_runtime.py --models resnet18,mobilenet_v2 --batch 1
Writes bench/results/runtime.json, merged with earlier runs by model so a subset can be refreshed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from squeezer.errors import ExportError
from squeezer.examples.ptq_check import ort_ptq
from squeezer.examples.zoo import VOCAB, ZOO, _Logits, build, prepare_torchvision
from squeezer.runtime import RUNTIMES, Runner, load_runner, time_runner

RESULTS = Path(__file__).parent / "results"
CNNS = [
    "resnet18",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "regnet_x_400mf",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "densenet121",
    "convnext_tiny",
    "efficientnet_lite0",
]
TRANSFORMERS = ["bert", "distilbert", "hf_vit", "bert_mini"]
SEQ = 128  # tokens per sequence for the language models
VARIANTS = ("fp32", "squeezer", "ort_ptq")


def bert_mini() -> nn.Module:
    """A realistic small encoder (4 layers, 256 wide, as google/bert_uncased_L-4_H-256_A-4), random init:
    the zoo's BERT is 32 wide, where per-op overhead hides what INT8 kernels do."""
    prepare_torchvision()
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
    )
    model = transformers.BertForSequenceClassification(config).eval()
    return _Logits(model, "input_ids").eval()  # the zoo's wrapper: one tensor in, logits out


def sample_shape(name: str) -> tuple[tuple[int, ...], bool]:
    """Per-sample input shape and whether the input is token ids."""
    if name == "bert_mini" or (name in ZOO and ZOO[name].kind == "tokens"):
        return (SEQ,), True
    if (name in ZOO and ZOO[name].family == "transformers") or name in ("vit_tiny", "swin_tiny"):
        return tuple(ZOO[name].input_shape[1:]), False  # built for its small image size
    return (3, 224, 224), False


def make_input(name: str, batch: int, seed: int) -> torch.Tensor:
    shape, tokens = sample_shape(name)
    generator = torch.Generator().manual_seed(seed)
    if tokens:
        return torch.randint(0, VOCAB, (batch, *shape), generator=generator)
    return torch.rand((batch, *shape), generator=generator)


def build_model(name: str) -> nn.Module:
    from squeezer.examples.zoo_check import calibrate_batchnorm

    if name == "bert_mini":
        return bert_mini()
    model = build(name)
    shape, _ = sample_shape(name)
    return calibrate_batchnorm(model, dataclasses.replace(ZOO[name], input_shape=(2, *shape)))


def squeezer_int8(
    model: nn.Module,
    calibration: list[torch.Tensor],
    out: Path,
    notes: list[str],
    compression: dict[str, Any] | None = None,
    sample: str = "int8",
) -> Path:
    """The sample config `sample` (`int8.json`; `int8_onnxruntime`: that runtime's placement) on the
    calibration batches (their shape and dtype give input_info), exported; `compression`: keys that
    replace the config's (e.g. "activations" with ignored_scopes)."""
    from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
    from squeezer.compression.config.samples import sample_config_path

    shape, tokens = tuple(calibration[0].shape[1:]), not calibration[0].is_floating_point()
    data = dict(NNCFConfig.from_json(sample_config_path(sample)))
    data["input_info"] = {"sample_size": [1, *shape], **({"type": "long"} if tokens else {})}
    data["compression"]["initializer"] = {
        "range": {"num_init_samples": sum(len(x) for x in calibration)},
        "batchnorm_adaptation": {"num_bn_adaptation_samples": 0},
    }
    data["compression"].update(compression or {})
    config = NNCFConfig.from_dict(data)
    loader = [(x, torch.zeros(len(x), dtype=torch.long)) for x in calibration]
    register_default_init_args(config, loader, criterion=nn.CrossEntropyLoss())
    ctrl, _ = create_compressed_model(model, config, dump_graphs=False)
    try:
        return ctrl.export_model(out)
    except ExportError as exc:  # the export's parity gate; the benchmark reports parity itself
        notes.append(f"export verification failed, exported unverified: {str(exc).strip()[:200]}")
        return ctrl.export_model(out, verify=False)


def input_names(path: Path) -> list[str]:
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def first_output(result: Any) -> np.ndarray:
    if isinstance(result, dict) or hasattr(result, "values"):
        return np.asarray(next(iter(result.values())))
    return np.asarray(result[0])


def side_by_side(runners: dict[str, Runner], feed: dict[str, np.ndarray], rounds: int, seconds: float) -> dict:
    """Round by round, each variant in a rotating order: per-round medians, then medians over rounds."""
    for run in runners.values():
        run(feed)
    start = time.perf_counter()
    runners["fp32"](feed)
    reps = int(min(50, max(2, seconds / max(time.perf_counter() - start, 1e-4))))
    per_round: dict[str, list[float]] = {k: [] for k in runners}
    best: dict[str, float] = dict.fromkeys(runners, math.inf)
    names = list(runners)
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            times = time_runner(runners[k], feed, warmup=1, repeats=reps, max_seconds=seconds)
            per_round[k].append(statistics.median(times))
            best[k] = min(best[k], *times)
    result: dict[str, Any] = {"ms": {k: round(statistics.median(v), 3) for k, v in per_round.items()}}
    # the fastest call of each: on a loaded machine, the cost of the kernels without the preemptions
    result["best_ms"] = {k: round(v, 3) for k, v in best.items()}
    result["speedup_best"] = {k: round(best["fp32"] / best[k], 3) for k in names if k != "fp32"}
    result["speedup"] = {
        k: round(statistics.median(f / v for f, v in zip(per_round["fp32"], per_round[k], strict=True)), 3)
        for k in names
        if k != "fp32"
    }
    # each round's medians: a comparison of two INT8 files pairs their rounds (same load), not two ratios to FP32
    result["rounds_ms"] = {k: [round(v, 4) for v in per_round[k]] for k in names}
    result["runs_per_round"] = reps
    return result


def bench_model(name: str, batches: list[int], rounds: int, seconds: float, threads: int, n_calib: int) -> dict:
    started = time.perf_counter()
    model = build_model(name)
    calibration = [make_input(name, 8, seed=10 + i) for i in range(max(1, n_calib // 8))]
    held_out = make_input(name, 8, seed=999)
    report: dict[str, Any] = {"input": list(sample_shape(name)[0]), "calibration_samples": 8 * len(calibration)}
    with tempfile.TemporaryDirectory() as tmp:
        from squeezer import export_onnx

        paths = {"fp32": export_onnx(model, Path(tmp) / "fp32.onnx", (held_out[:1],), verify_inputs=((held_out,), {}))}
        notes: list[str] = []
        paths["squeezer"] = squeezer_int8(model, calibration, Path(tmp) / "squeezer.onnx", notes)
        if notes:
            report["notes"] = notes
        paths["ort_ptq"] = ort_ptq(paths["fp32"], calibration, Path(tmp) / "ort_ptq.onnx")
        report["prepare_s"] = round(time.perf_counter() - started, 1)
        sizes = {k: p.stat().st_size for k, p in paths.items()}
        report["bytes"] = sizes
        report["size_ratio"] = {k: round(sizes[k] / sizes["fp32"], 3) for k in VARIANTS if k != "fp32"}
        feed_name = input_names(paths["fp32"])[0]
        for k, p in paths.items():  # each file has the same input name, as the FP32 export named it
            if input_names(p) != [feed_name]:
                raise RuntimeError(f"{k} export of {name} has inputs {input_names(p)}, expected [{feed_name}]")
        report["latency"] = {}
        for runtime in RUNTIMES:
            runners = {k: load_runner(p, runtime, threads) for k, p in paths.items()}
            feed = {feed_name: held_out.numpy()}
            outs = {k: first_output(run(feed)) for k, run in runners.items()}
            scale = max(float(np.abs(outs["fp32"]).max()), 1e-4)
            report.setdefault("parity", {})[runtime] = {
                k: round(float(np.abs(outs[k] - outs["fp32"]).max()) / scale, 4) for k in VARIANTS if k != "fp32"
            }
            for batch in batches:
                feed = {feed_name: held_out[:batch].numpy()}
                report["latency"].setdefault(str(batch), {})[runtime] = side_by_side(runners, feed, rounds, seconds)
            del runners
    for by_runtime in report["latency"].values():
        ort_ms, ov_ms = by_runtime["onnxruntime"]["ms"]["fp32"], by_runtime["openvino"]["ms"]["fp32"]
        by_runtime["openvino_fp32_vs_onnxruntime_fp32"] = round(ort_ms / ov_ms, 3)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def print_table(results: dict[str, Any]) -> None:
    head = (
        f"{'model':20} {'b':>2} | {'ORT fp32 ms':>11} {'sq x':>5} {'ptq x':>5} | {'OV fp32 ms':>10} {'sq x':>5} "
        f"{'ptq x':>5} | {'OV/ORT':>6} | {'size sq':>7} {'ptq':>5} | {'parity sq':>9} {'ptq':>6}"
    )
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        if "error" in r:
            print(f"{name:20} error: {r['error'][:120]}")
            continue
        for batch, lat in r["latency"].items():
            o, v = lat["onnxruntime"], lat["openvino"]
            print(
                f"{name:20} {batch:>2} | {o['ms']['fp32']:11.2f} {o['speedup']['squeezer']:5.2f} "
                f"{o['speedup']['ort_ptq']:5.2f} | {v['ms']['fp32']:10.2f} {v['speedup']['squeezer']:5.2f} "
                f"{v['speedup']['ort_ptq']:5.2f} | {lat['openvino_fp32_vs_onnxruntime_fp32']:6.2f} | "
                f"{r['size_ratio']['squeezer']:7.3f} {r['size_ratio']['ort_ptq']:5.3f} | "
                f"{r['parity']['onnxruntime']['squeezer']:9.4f} {r['parity']['onnxruntime']['ort_ptq']:6.4f}"
            )


def machine() -> dict[str, Any]:
    import onnxruntime
    import openvino

    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    return {
        "cpu": platform.processor() or platform.machine(),
        "isa": [f for f in wanted if f" {f}" in flags],
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__,
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CNNS + TRANSFORMERS), help="comma-separated zoo names")
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="timing per variant per round")
    parser.add_argument("--calibration", type=int, default=32, help="calibration samples (batches of 8)")
    parser.add_argument("--out", type=Path, default=RESULTS / "runtime.json")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in ZOO and m != "bert_mini"]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join([*ZOO, 'bert_mini'])}")
    batches = [int(b) for b in args.batch.split(",")]
    torch.set_num_threads(args.threads)
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    results: dict[str, Any] = saved.get("models", {})
    done: dict[str, Any] = {}
    for name in models:
        print(f"-- {name}", flush=True)
        try:
            done[name] = bench_model(name, batches, args.rounds, args.seconds, args.threads, args.calibration)
        except Exception as exc:  # one model's failure is reported, the others still run
            done[name] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
        results[name] = done[name]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"machine": machine(), "threads": args.threads, "rounds": args.rounds}
        args.out.write_text(json.dumps({**meta, "models": results}, indent=1))
        print_table({name: done[name]})
    print()
    print_table(done)


if __name__ == "__main__":
    main()
