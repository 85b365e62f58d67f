"""The library end to end on real data: train a small CNN on digits, compress it to INT8, export ONNX.

python -m squeezer.examples.demo [--out .squeezer/demo]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.examples.digits import accuracy, digits_loaders, train_epoch
from squeezer.examples.models import ResidualCNN

CONFIG = {
    "input_info": {"sample_size": [1, 1, 32, 32]},
    "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 256}}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(".squeezer/demo"))
    parser.add_argument("--epochs", type=int, default=4, help="FP32 training epochs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    train, val = digits_loaders(image_size=32)

    model = ResidualCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(args.epochs):
        train_epoch(model, train, optimizer)
    fp32_acc = accuracy(model, val)
    print(f"FP32 accuracy on digits: {fp32_acc:.2f}%")

    config = NNCFConfig.from_dict({**CONFIG, "log_dir": str(args.out)})
    config = register_default_init_args(config, train)
    ctrl, qmodel = create_compressed_model(model, config)
    optimizer = torch.optim.Adam(qmodel.parameters(), lr=1e-4)
    for epoch in range(2):
        ctrl.scheduler.epoch_step()
        loss = train_epoch(qmodel, train, optimizer, ctrl)
        print(f"QAT epoch {epoch}: loss {loss:.4f}, accuracy {accuracy(qmodel, val):.2f}%")
    print(ctrl.statistics().to_str())

    path = ctrl.export_model(args.out / "model.int8.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    correct = total = 0
    for x, y in val:
        correct += int((np.argmax(session.run(None, {"input.0": x.numpy()})[0], 1) == y.numpy()).sum())
        total += len(y)
    print(
        f"INT8 ONNX: {path} ({path.stat().st_size / 1024:.0f} KiB), onnxruntime accuracy {100 * correct / total:.2f}%"
    )


if __name__ == "__main__":
    main()
