"""The product end to end on the embedded defaults: start `squeezer serve` (SQLite, a SQLite broker,
files under ./.squeezer), submit a digits CNN through the SDK to be made 80% sparse and INT8 within an
accuracy budget, print its epochs as they happen, download the verified ONNX and run it in onnxruntime.

The compression costs more accuracy than the budget allows at first (epoch 0, before any training);
the early-exit loop then fine-tunes until the model is back within the budget and stops there.

python -m squeezer.examples.service_demo [--home .squeezer] [--port 8000]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from squeezer.client import Client, JobRead, wait_ready
from squeezer.examples.digits import digits_split, trained_demo_cnn

ALLOWED_DROP = 1.0  # accuracy points below the uncompressed model
SPARSITY = 0.8  # of the weights zeroed, all at once (a schedule with a single level)
CONFIG = {
    "input_info": {"sample_size": [1, 1, 32, 32]},
    "compression": [
        {
            "algorithm": "magnitude_sparsity",
            "sparsity_init": SPARSITY,
            "params": {"schedule": "multistep", "multistep_steps": [], "multistep_sparsity_levels": [SPARSITY]},
        },
        {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 256}}},
    ],
    "accuracy_aware_training": {
        "mode": "early_exit",
        "params": {"maximal_absolute_accuracy_degradation": ALLOWED_DROP, "maximal_total_epochs": 6},
    },
}


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _print_epochs(client: Client, job: JobRead) -> None:
    """One line per epoch as the service reports it (`client.jobs.wait(job, progress=True)` draws a bar instead)."""
    for event in client.jobs.events(job):
        if event.event == "end":
            return
        if event.event == "metric":
            m = event.metric
            note = f"loss {m.loss:.3f}" if m.loss is not None else "before training"
            state = "within the budget: done" if m.accuracy_budget >= 0 else "below the budget: training on"
            print(
                f"  epoch {m.epoch} ({note}): accuracy {m.metric:.2f}%, {m.accuracy_budget:+.2f} vs budget, {state}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(".squeezer"))
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if not _port_is_free(args.port):
        raise SystemExit(f"port {args.port} is taken; pass --port")

    model, fp32_accuracy = trained_demo_cnn()
    print(f"trained a digits CNN: FP32 accuracy {fp32_accuracy:.2f}%")

    url = f"http://127.0.0.1:{args.port}"
    env = {**os.environ, "SQUEEZER_HOME": str(args.home)}
    args.home.mkdir(parents=True, exist_ok=True)
    log_path = args.home / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "squeezer.cli", "serve", "--port", str(args.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(url, alive=lambda: server.poll() is None)
        print(f"squeezer serve is up on {url} (log: {log_path})")
        os.environ["SQUEEZER_HOME"] = str(args.home)  # the SDK finds the key file serve wrote
        train_xy, (x_val, y_val) = digits_split(image_size=32)  # the split the model was trained on
        with Client(url) as client:
            job = client.compress(model, torch.rand(1, 1, 32, 32), CONFIG, train_xy, (x_val, y_val), {"lr": 1e-3})
            print(f"submitted job {job.id}: {SPARSITY:.0%} sparse + INT8, at most {ALLOWED_DROP} points below FP32")
            _print_epochs(client, job)
            job = client.jobs.wait(job)
            if job.status != "succeeded":
                raise SystemExit(f"job {job.status}: {job.error}")
            onnx = client.jobs.download(job, "onnx", args.home / "demo" / "model.int8.onnx")
        session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        logits = session.run(None, {session.get_inputs()[0].name: x_val.numpy()})[0]
        int8 = 100.0 * float((np.argmax(logits, 1) == y_val.numpy()).mean())
        print(f"INT8 ONNX: {onnx} ({onnx.stat().st_size / 1024:.0f} KiB)")
        uncompressed = job.result.uncompressed_metric if job.result else None
        print(
            f"onnxruntime accuracy {int8:.2f}% (the job measured FP32 at {uncompressed:.2f}%; "
            f"allowed drop {ALLOWED_DROP})"
        )
        for runtime, t in job.latency.items():  # measured by the worker on this machine's CPU
            print(
                f"{runtime}: {t.compressed_ms:.3g} ms per batch of {t.batch_size} against {t.fp32_ms:.3g} ms FP32 "
                f"({t.speedup:.2f}x)"
            )
        for warning in job.warnings:
            print(f"warning: {warning}")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
