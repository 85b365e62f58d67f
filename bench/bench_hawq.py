"""HAWQ mixed precision on a digits-trained ResidualCNN: does the Hessian-trace choice of 4-bit layers
beat other choices at the same compression ratio, and what do 4-bit weights cost in onnxruntime?

Rows (weights 4 or 8 bits, activations 8 bits, all at compression ratio >= --ratio, which is
sum(MACs * 8) / sum(MACs * weight bits)): all 8-bit; HAWQ; "reverse" (the most sensitive layers
lowered first until the ratio is met); random orders (mean over seeds); all 4-bit. After range init
alone (PTQ, no training): validation accuracy, cross-entropy, and the logits' relative error against
the all-8-bit model (digits is easy: accuracy barely moves, the loss and logits do). Then the HAWQ
model's ONNX file as exported (4-bit values in int8 containers) against the same file with INT4
initializers (opset 21): size and onnxruntime latency, measured side by side.
Prints tables; writes bench/results/hawq.json.

    python bench/bench_hawq.py [--ratio 1.5] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.compression.init_args import wrap_dataloader_for_init
from squeezer.compression.quantization.precision.int4_onnx import pack_int4_weights
from squeezer.compression.quantization.range_init import adapt_batchnorm
from squeezer.examples.digits import accuracy, digits_loaders, train_epoch
from squeezer.examples.models import ResidualCNN

RESULTS = Path(__file__).parent / "results"


def config(log_dir: str, precision: dict[str, Any] | None) -> NNCFConfig:
    initializer: dict[str, Any] = {"range": {"num_init_samples": 256}}
    if precision is not None:
        initializer["precision"] = precision
    return NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, 1, 32, 32]},
            "log_dir": log_dir,
            "compression": {"algorithm": "quantization", "initializer": initializer},
        }
    )


def lowered_in_order(layers: list[dict[str, Any]], order: list[str], ratio: float) -> set[str]:
    """Lower layers to 4 bits in `order` until the compression ratio is met."""
    macs = {layer["id"]: layer["macs"] for layer in layers}
    reference = 8 * sum(macs.values())
    low: set[str] = set()
    for qid in order:
        if reference / sum(m * (4 if k in low else 8) for k, m in macs.items()) >= ratio:
            break
        low.add(qid)
    return low


@torch.no_grad()
def logits_of(model: nn.Module, loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    pairs = [(model(x), y) for x, y in loader]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def evaluate(model: nn.Module, precision: dict[str, Any] | None, loaders: Any, log_dir: str) -> dict[str, Any]:
    train, val = loaders
    cfg = config(log_dir, precision)
    register_default_init_args(cfg, train, criterion=nn.CrossEntropyLoss())
    start = time.perf_counter()
    ctrl, compressed = create_compressed_model(model, cfg, dump_graphs=False)
    create_s = time.perf_counter() - start
    logits, labels = logits_of(compressed, val)
    return {
        "bits": {wp.id: wp.spec.num_bits for wp in ctrl.setup.weights},
        "ptq_accuracy": accuracy(compressed, val),
        "ptq_loss": float(F.cross_entropy(logits, labels)),
        "logits": logits,
        "create_s": create_s,
        "ctrl": ctrl,
    }


def objective(layers: list[dict[str, Any]], bits: dict[str, int]) -> float:
    """The summed second-order loss estimate HAWQ minimizes, for any assignment."""
    return sum(layer["sensitivity"][str(bits[layer["id"]])] for layer in layers)


def latency_ms(path: Path, x: np.ndarray, rounds: int = 5, reps: int = 100) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    session.run(None, feed)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            session.run(None, feed)
        times.append((time.perf_counter() - start) / reps * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratio", type=float, default=1.5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "hawq.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    loaders = digits_loaders(image_size=32, batch_size=64)
    model = ResidualCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        train_epoch(model, loaders[0], optimizer)
    # the compressed models get BatchNorm adaptation (register_default_init_args' default): so does FP32
    adapt_batchnorm(model, wrap_dataloader_for_init(loaders[0]), 2000, torch.device("cpu"))
    fp32 = accuracy(model, loaders[1])
    tmp = Path(tempfile.mkdtemp())
    hawq_precision = {
        "type": "hawq",
        "bits": [4, 8],
        "num_data_points": 128,
        "iter_number": 20,
        "compression_ratio": args.ratio,
        "dump_init_precision_data": True,
    }
    rows: dict[str, dict[str, Any]] = {"all 8-bit": evaluate(model, None, loaders, str(tmp))}
    rows["HAWQ"] = evaluate(model, hawq_precision, loaders, str(tmp))
    report = json.loads((tmp / "hawq_precision_init.json").read_text())
    layers = report["layers"]

    def manual(low: set[str]) -> dict[str, Any]:
        return {"type": "manual", "bitwidth_per_scope": [[4, qid] for qid in sorted(low)]}

    by_trace = [layer["id"] for layer in sorted(layers, key=lambda x: -x["hessian_trace"])]
    rows["reverse (most sensitive first)"] = evaluate(
        model, manual(lowered_in_order(layers, by_trace, args.ratio)), loaders, str(tmp)
    )
    randoms = []
    for seed in range(args.seeds):
        order = [layer["id"] for layer in layers]
        random.Random(seed).shuffle(order)
        randoms.append(evaluate(model, manual(lowered_in_order(layers, order, args.ratio)), loaders, str(tmp)))
    rows["all 4-bit"] = evaluate(model, manual({layer["id"] for layer in layers}), loaders, str(tmp))
    macs = {layer["id"]: layer["macs"] for layer in layers}

    def ratio_of(bits: dict[str, int]) -> float:
        return 8 * sum(macs.values()) / sum(macs[k] * bits[k] for k in macs)

    print(f"ResidualCNN on digits, FP32 accuracy {fp32:.2f}%; target compression ratio {args.ratio}")
    header = (
        f"{'weights':<32}{'4-bit':>6}{'ratio':>7}{'HAWQ objective':>16}{'accuracy':>10}{'loss':>8}{'logit err':>11}"
    )
    print(header)
    table = []
    reference = rows["all 8-bit"]["logits"]

    def logit_error(r: dict[str, Any]) -> float:
        return float((r["logits"] - reference).norm() / reference.norm())

    for name, r in [*rows.items(), ("random order (mean)", None)]:
        if r is None:
            entry = {
                "weights": name,
                "layers_4bit": statistics.mean(sum(b == 4 for b in x["bits"].values()) for x in randoms),
                "compression_ratio": statistics.mean(ratio_of(x["bits"]) for x in randoms),
                "objective": statistics.mean(objective(layers, x["bits"]) for x in randoms),
                "ptq_accuracy": statistics.mean(x["ptq_accuracy"] for x in randoms),
                "ptq_loss": statistics.mean(x["ptq_loss"] for x in randoms),
                "logit_error_vs_8bit": statistics.mean(logit_error(x) for x in randoms),
                "seeds": args.seeds,
            }
        else:
            entry = {
                "weights": name,
                "layers_4bit": sum(b == 4 for b in r["bits"].values()),
                "compression_ratio": ratio_of(r["bits"]),
                "objective": objective(layers, r["bits"]),
                "ptq_accuracy": r["ptq_accuracy"],
                "ptq_loss": r["ptq_loss"],
                "logit_error_vs_8bit": logit_error(r),
            }
        table.append(entry)
        print(
            f"{name:<32}{entry['layers_4bit']:>6.1f}{entry['compression_ratio']:>7.3f}{entry['objective']:>16.4g}"
            f"{entry['ptq_accuracy']:>9.2f}%{entry['ptq_loss']:>8.4f}{entry['logit_error_vs_8bit']:>11.4f}"
        )
    hawq_init_s = rows["HAWQ"]["create_s"] - rows["all 8-bit"]["create_s"]
    print(f"HAWQ search time (create_compressed_model minus the all-8-bit one): {hawq_init_s:.1f} s")

    int8_path, int4_path = tmp / "hawq_int8_containers.onnx", tmp / "hawq_int4.onnx"
    rows["HAWQ"]["ctrl"].export_model(str(int8_path))
    packed = pack_int4_weights(int8_path, int4_path)
    x = next(iter(loaders[1]))[0][:1].numpy()
    outputs = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input.0": x})[0]
        for p in (int8_path, int4_path)
    ]
    lat = {"int8 containers": [], "INT4 initializers": []}  # interleaved rounds: the machine is shared
    for _ in range(3):
        lat["int8 containers"].append(latency_ms(int8_path, x))
        lat["INT4 initializers"].append(latency_ms(int4_path, x))
    storage = []
    print(f"\n{'HAWQ ONNX file':<22}{'bytes':>9}{'ms / image':>12}")
    for name, path in (("int8 containers", int8_path), ("INT4 initializers", int4_path)):
        entry = {"file": name, "bytes": path.stat().st_size, "latency_ms": statistics.median(lat[name])}
        storage.append(entry)
        print(f"{name:<22}{entry['bytes']:>9}{entry['latency_ms']:>12.3f}")
    size_ratio = storage[1]["bytes"] / storage[0]["bytes"]
    speed_ratio = storage[1]["latency_ms"] / storage[0]["latency_ms"]
    max_diff = float(np.abs(outputs[0] - outputs[1]).max())
    print(f"INT4 file: {size_ratio:.3f}x the size, {speed_ratio:.2f}x the latency, {packed} weights packed")
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "model": "ResidualCNN, 4 epochs on sklearn digits (32x32)",
        "fp32_accuracy": fp32,
        "target_compression_ratio": args.ratio,
        "compression_ratio_definition": report["compression_ratio_definition"],
        "hawq_search_s": hawq_init_s,
        "assignments": table,
        "hawq_layers": [{k: layer[k] for k in ("id", "bits", "hessian_trace", "macs")} for layer in layers],
        "onnx_storage": storage,
        "int4_over_int8_size": size_ratio,
        "int4_over_int8_latency": speed_ratio,
        "int4_vs_int8_max_output_diff": max_diff,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
