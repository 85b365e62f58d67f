"""INT8 quantization benchmark: QAT step time, onnxruntime latency, file size, accuracy, create time.

Everything is measured side by side in one run (interleaved rounds, medians) because these machines
are shared and noisy. Prints a table and writes bench/results/quantization[-cuda].json.

    python bench/bench_quantization.py                 # residual CNN on digits, CPU
    python bench/bench_quantization.py --device cuda   # ResNet-50 on synthetic 224x224 batches, step ratio only
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

from squeezer import NNCFConfig, create_compressed_model, export_onnx, register_default_init_args
from squeezer.examples.digits import accuracy, digits_loaders, train_epoch
from squeezer.examples.models import ResidualCNN, ResNet50
from squeezer.examples.ptq_check import ort_ptq

RESULTS = Path(__file__).parent / "results"


def interleaved(fns: dict[str, Callable[[], None]], rounds: int, reps: int) -> dict[str, float]:
    """Median seconds per call of each function, alternating between them round by round."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()  # warm this one up again after the others ran
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            samples[name].append((time.perf_counter() - start) / reps)
    return {k: statistics.median(v) for k, v in samples.items()}


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if x.is_cuda:
            torch.cuda.synchronize()

    return step


def int8_config(**extra: object) -> NNCFConfig:
    return NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 1, 32, 32]}, "compression": {"algorithm": "quantization", **extra}}
    )


def ort_accuracy(path: Path, loader: torch.utils.data.DataLoader) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = total = 0
    for x, y in loader:
        correct += int((session.run(None, {name: x.numpy()})[0].argmax(1) == y.numpy()).sum())
        total += len(y)
    return 100.0 * correct / total


def bench_cpu(args: argparse.Namespace) -> dict[str, object]:
    torch.manual_seed(0)
    train, val = digits_loaders(image_size=32, batch_size=64)
    fp32 = ResidualCNN()
    optimizer = torch.optim.Adam(fp32.parameters(), lr=3e-3)
    for _ in range(args.fp32_epochs):
        train_epoch(fp32, train, optimizer)
    fp32_acc = accuracy(fp32, val)

    # create_compressed_model: default init (range init 256 samples + BN adaptation 2000 samples)
    create_times = []
    for _ in range(3):
        config = register_default_init_args(int8_config(), train)
        start = time.perf_counter()
        ctrl, model = create_compressed_model(fp32, config, dump_graphs=False)
        create_times.append(time.perf_counter() - start)
    no_bn = register_default_init_args(
        int8_config(initializer={"batchnorm_adaptation": {"num_bn_adaptation_samples": 0}}), train
    )
    start = time.perf_counter()
    create_compressed_model(fp32, no_bn, dump_graphs=False)
    create_no_bn = time.perf_counter() - start

    # 2 QAT epochs
    qat_optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    for _ in range(2):
        ctrl.scheduler.epoch_step()
        train_epoch(model, train, qat_optimizer, ctrl)
    qat_acc = accuracy(model, val)

    # training step time, side by side
    x = torch.rand(64, 1, 32, 32)
    y = torch.randint(0, 10, (64,))
    steps = interleaved(
        {"fp32": train_step(copy.deepcopy(fp32), x, y), "qat": train_step(copy.deepcopy(model), x, y)},
        rounds=args.rounds,
        reps=5,
    )

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        int8_path = ctrl.export_model(tmpdir / "int8.onnx")
        fp32_path = export_onnx(fp32, tmpdir / "fp32.onnx", (x[:1],), verify_inputs=((x,), {}))
        yard_path = ort_ptq(fp32_path, [x for x, _ in list(train)[:4]], tmpdir / "ort_static.onnx")
        sizes = {
            k: os.path.getsize(p) for k, p in (("fp32", fp32_path), ("int8", int8_path), ("ort_static", yard_path))
        }
        sessions = {
            k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
            for k, p in (("fp32", fp32_path), ("int8", int8_path), ("ort_static", yard_path))
        }
        latency = {}
        for batch in (1, 64):
            feed = {"input.0": np.random.rand(batch, 1, 32, 32).astype(np.float32)}
            latency[batch] = interleaved(
                {k: (lambda s=s, feed=feed: s.run(None, feed)) for k, s in sessions.items()},
                rounds=args.rounds,
                reps=200 if batch == 1 else 5,  # a batch-1 call is ~0.2 ms: 20 calls measured noise
            )
        ort_acc = ort_accuracy(int8_path, val)
        yard_acc = ort_accuracy(yard_path, val)
        wide = wide_model_latency(train, tmpdir, args.rounds)

    return {
        "model": "ResidualCNN (digits, 1x32x32)",
        "fp32_accuracy": fp32_acc,
        "qat_accuracy_2_epochs": qat_acc,
        "onnxruntime_int8_accuracy": ort_acc,
        "ort_static_yardstick_accuracy": yard_acc,
        "create_compressed_model_s": {
            "first": create_times[0],
            "warm": min(create_times[1:]),
            "warm_without_bn_adaptation": create_no_bn,
        },
        "train_step_ms": {k: v * 1000 for k, v in steps.items()},
        "train_step_ratio": steps["qat"] / steps["fp32"],
        "onnx_bytes": sizes,
        "onnx_size_ratio": sizes["int8"] / sizes["fp32"],
        "ort_latency_ms": {str(b): {k: v * 1000 for k, v in lat.items()} for b, lat in latency.items()},
        "ort_speedup_vs_fp32": {str(b): lat["fp32"] / lat["int8"] for b, lat in latency.items()},
        "ort_static_speedup_vs_fp32": {str(b): lat["fp32"] / lat["ort_static"] for b, lat in latency.items()},
        "wide_width64_ort_speedup_vs_fp32": wide,
    }


def wide_model_latency(train: torch.utils.data.DataLoader, tmpdir: Path, rounds: int) -> dict[str, float]:
    """The same network 4x wider (64-256 channels): int8 gains grow with the share of conv work."""
    torch.manual_seed(0)
    fp32 = ResidualCNN(width=64)
    config = register_default_init_args(
        int8_config(initializer={"batchnorm_adaptation": {"num_bn_adaptation_samples": 0}}), train
    )
    ctrl, _ = create_compressed_model(fp32, config, dump_graphs=False)
    x = torch.rand(64, 1, 32, 32)
    int8_path = ctrl.export_model(tmpdir / "wide_int8.onnx")
    fp32_path = export_onnx(fp32, tmpdir / "wide_fp32.onnx", (x[:1],), verify_inputs=((x,), {}))
    sessions = {
        k: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        for k, p in (("fp32", fp32_path), ("int8", int8_path))
    }
    speedup = {}
    for batch in (1, 64):
        feed = {"input.0": np.random.rand(batch, 1, 32, 32).astype(np.float32)}
        lat = interleaved(
            {k: (lambda s=s, feed=feed: s.run(None, feed)) for k, s in sessions.items()},
            rounds=rounds,
            reps=10 if batch == 1 else 2,
        )
        speedup[str(batch)] = lat["fp32"] / lat["int8"]
    return speedup


def bench_cuda(args: argparse.Namespace) -> dict[str, object]:
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = ResNet50().to(device)
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, 3, 224, 224]}, "compression": {"algorithm": "quantization"}}
    )
    batch = [(torch.rand(args.batch, 3, 224, 224), torch.randint(0, 1000, (args.batch,))) for _ in range(2)]
    register_default_init_args(config, batch, device=device)
    _, qmodel = create_compressed_model(model, config, dump_graphs=False)
    x = torch.rand(args.batch, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    steps = interleaved({"fp32": train_step(model, x, y), "qat": train_step(qmodel, x, y)}, rounds=args.rounds, reps=10)
    return {
        "model": f"ResNet-50, synthetic 224x224, batch {args.batch}",
        "device": torch.cuda.get_device_name(),
        "train_step_ms": {k: v * 1000 for k, v in steps.items()},
        "train_step_ratio": steps["qat"] / steps["fp32"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--fp32-epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64, help="cuda: batch size")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    result = bench_cuda(args) if args.device == "cuda" else bench_cpu(args)
    result["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("quantization-cuda.json" if args.device == "cuda" else "quantization.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'metric':<44} value")
    for key, value in result.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                print(f"{key + '.' + str(sub):<44} {json.dumps(v) if isinstance(v, dict) else _fmt(v)}")
        else:
            print(f"{key:<44} {_fmt(value)}")
    print(f"\nwritten to {out}")


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    main()
