"""One zoo case: a model we did not write, one compression config, one way in (the library on the
eager model, or the service's path: `torch.export` -> `.pt2` -> safe load -> lift). Compress, train a
few steps, export to ONNX (which verifies onnxruntime against the compressed model) and report the
exact reason when any step fails. Used by `tests/zoo/` and `bench/bench_zoo.py`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from squeezer.examples.zoo import ZOO, ZooModel, build

logger = logging.getLogger(__name__)

QUANTIZATION = {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 4}}}
ALGORITHMS: dict[str, list[dict[str, Any]]] = {
    "int8": [QUANTIZATION],
    "sparsity": [{"algorithm": "magnitude_sparsity", "sparsity_init": 0.5}],
    "pruning": [{"algorithm": "filter_pruning", "pruning_init": 0.3}],
    "int8+kd": [QUANTIZATION, {"algorithm": "knowledge_distillation", "type": "softmax"}],
}
PATHS = ("library", "service")


@dataclass
class CaseResult:
    model: str
    algorithm: str
    path: str
    ok: bool
    stage: str = "done"  # the step that failed: build / lift / compress / train / export / parity
    reason: str = ""
    seconds: float = 0.0
    parity: float | None = None  # onnxruntime vs the compressed torch model, max |diff| / max |out|
    size_ratio: float | None = None  # ONNX file size / FP32 ONNX-equivalent parameter bytes
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _targets(spec: ZooModel, out: torch.Tensor, batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    if out.dim() == 3:  # language model: one target per token
        return torch.randint(0, out.shape[-1], out.shape[:2], generator=generator)
    return torch.randint(0, out.shape[-1], (batch,), generator=generator)


def _task_loss(out: Any, y: torch.Tensor) -> torch.Tensor:
    logits = out if isinstance(out, torch.Tensor) else out[0]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _to_service_model(model: nn.Module, x: torch.Tensor, workdir: Path) -> nn.Module:
    """What a user's upload goes through: the SDK's `.pt2` export (dynamic batch), then the worker's
    load without unpickling and lift."""
    from squeezer.client.packaging import export_model
    from squeezer.compression.graph.archive import load_exported_program
    from squeezer.compression.graph.lift import lift_exported_program

    path = export_model(model, x, workdir / "model.pt2")
    return lift_exported_program(load_exported_program(path))


def run_case(name: str, algorithm: str, path: str, workdir: Path, steps: int = 2, batch: int = 4) -> CaseResult:
    """Run one case; never raises for a failure of the model under test (it is reported instead)."""
    spec = ZOO[name]
    workdir.mkdir(parents=True, exist_ok=True)
    result = CaseResult(name, algorithm, path, ok=False, stage="build")
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # what the library says is part of the report, not a failure
        _run(spec, algorithm, path, workdir, steps, batch, result)
    said = list(dict.fromkeys(f"{w.category.__name__}: {str(w.message)[:200]}" for w in caught))
    if said:
        result.details["warnings"] = said[:5]
    result.seconds = round(time.perf_counter() - start, 2)
    return result


def _run(spec: ZooModel, algorithm: str, path: str, workdir: Path, steps: int, batch: int, result: CaseResult) -> None:
    from squeezer import NNCFConfig, create_compressed_model, register_default_init_args

    name = spec.name
    try:
        model = calibrate_batchnorm(build(name), spec)
        fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
        x = spec.example_input(batch)
        if path == "service":
            result.stage = "lift"
            model = _to_service_model(model, x, workdir)
        with torch.no_grad():
            reference = model(x)
        y = _targets(spec, reference if isinstance(reference, torch.Tensor) else reference[0], batch)
        result.stage = "compress"
        info: dict[str, Any] = {"sample_size": [1, *spec.input_shape[1:]]}
        if spec.kind == "tokens":
            info["type"] = "long"
        config = NNCFConfig.from_dict(
            {"input_info": info, "log_dir": str(workdir / "logs"), "compression": copy.deepcopy(ALGORITHMS[algorithm])}
        )
        data = [(spec.example_input(batch, seed=s), y) for s in range(2)]
        register_default_init_args(config, data, criterion=nn.CrossEntropyLoss())
        ctrl, compressed = create_compressed_model(model, config, dump_graphs=False)
        result.stage = "train"
        optimizer = torch.optim.SGD(compressed.parameters(), lr=1e-3)
        compressed.train()
        ctrl.scheduler.epoch_step()
        for step in range(steps):
            ctrl.scheduler.step()
            xb, yb = data[step % len(data)]
            loss = _task_loss(compressed(xb), yb) + ctrl.loss()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the training loss is {loss.item()} at step {step}")
            optimizer.zero_grad()
            loss.backward()
            # random weights give QAT huge gradients (NNCF's too); clip them as a real recipe would
            grad_norm = torch.nn.utils.clip_grad_norm_(compressed.parameters(), 1.0)
            result.details["grad_norm"] = max(result.details.get("grad_norm", 0.0), float(grad_norm))
            optimizer.step()
        compressed.eval()
        result.details["compression_rate"] = _rate(ctrl)
        result.stage = "export"
        onnx_path = workdir / f"{name}.{algorithm}.{path}.onnx"
        ctrl.export_model(str(onnx_path))
        result.stage = "parity"
        result.parity = _parity(compressed, onnx_path, x)
        result.size_ratio = onnx_path.stat().st_size / fp32_bytes if fp32_bytes else None
        result.ok, result.stage = True, "done"
    except Exception as exc:  # the report is the product here
        result.reason = f"{type(exc).__name__}: {_first_line(exc)}"
        logger.debug("%s %s %s failed:\n%s", name, algorithm, path, traceback.format_exc())


def calibrate_batchnorm(model: nn.Module, spec: ZooModel, batches: int = 4) -> nn.Module:
    """BatchNorm statistics from a few batches, as a trained model has them. At their defaults (mean 0,
    variance 1) over random weights, activations blow up or vanish layer by layer and QAT of e.g.
    MobileNetV2 diverges at once (NNCF's too): a property of the random model, not of compression."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    model.train()
    with torch.no_grad():
        for seed in range(batches):
            model(spec.example_input(8, seed=100 + seed))
    return model.eval()


def _rate(ctrl: Any) -> float | None:
    try:
        rate = float(ctrl.compression_rate)
    except (AttributeError, NotImplementedError, TypeError):
        return None
    return rate if math.isfinite(rate) else None


def _parity(model: nn.Module, onnx_path: Path, x: torch.Tensor) -> float:
    import onnxruntime as ort

    with torch.no_grad():
        out = model(x)
    expected = (out if isinstance(out, torch.Tensor) else out[0]).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    # relative to the output's size, with the export gate's absolute slack: a random model whose
    # activations collapse (MobileNetV3-small: logits ~1e-11) is not a 100% disagreement
    return float(np.max(np.abs(expected - actual)) / max(float(np.max(np.abs(expected))), 1e-4))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:300]


def main(argv: list[str] | None = None) -> None:
    """`python -m squeezer.examples.zoo_check MODEL ALGORITHM PATH WORKDIR OUT.json`: one case, run in
    its own process by the benchmark so that a hang or a crash costs one cell, not the table."""
    import json
    import sys
    import warnings

    args = argv if argv is not None else sys.argv[1:]
    name, algorithm, path, workdir, out = args
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    result = run_case(name, algorithm, path, Path(workdir))
    Path(out).write_text(json.dumps(result.to_dict()))


if __name__ == "__main__":
    main()
