"""Post-training quality of range initialization, against onnxruntime's own min-max PTQ.

One zoo CNN (random init, BatchNorm calibrated as in `zoo_check`) at a small input: quantize it with
Squeezer's INT8 config (range init on the calibration batches, no BatchNorm adaptation, no training)
and, from the FP32 ONNX file of the same model, with `onnxruntime.quantization.quantize_static` (QDQ,
per-channel int8 weights, uint8 activations, min-max calibration) on the same calibration batches.
Both are compared with the FP32 model on held-out batches of the same distribution.

BatchNorm adaptation is left out of the comparison on purpose: `calibrate_batchnorm` leaves running
statistics part-way to the data's (4 batches at momentum 0.1), so adaptation moves them further and
changes the model the INT8 output is compared with; on a model whose statistics have converged (a
trained one) it lowers the error instead (docs/benchmarks.md, "Post-training quality"). Used by
`bench/bench_ptq_quality.py` and `tests/compression/quantization/test_ptq_quality.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezer.examples.zoo import ZOO, ZooModel, build
from squeezer.examples.zoo_check import calibrate_batchnorm

CNNS = (
    "resnet18",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "regnet_x_400mf",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
)


@dataclass
class PTQResult:
    """Errors are max |int8 - fp32| / max |fp32| on held-out batches, averaged over model seeds.

    Squeezer's default INT8 config quantizes weights to 7 bits (overflow_fix "enable", NNCF's default:
    no saturation in 16-bit sums on CPUs without VNNI); onnxruntime's `reduce_range=True` does the same,
    so each Squeezer number is compared with onnxruntime at the same weight precision.
    """

    model: str
    size: int
    calibration_samples: int
    seeds: int
    squeezer_torch: float  # default config (7-bit weights), range init only: the compressed torch model
    squeezer_onnx: float  # ... its exported INT8 ONNX in onnxruntime
    ort_ptq_7bit: float  # quantize_static, reduce_range=True (7-bit weights)
    ratio_7bit: float  # squeezer_onnx / ort_ptq_7bit
    squeezer_8bit_onnx: float  # overflow_fix "disable" (8-bit weights), exported, in onnxruntime
    ort_ptq: float  # quantize_static with 8-bit weights (its default)
    ratio_8bit: float  # squeezer_8bit_onnx / ort_ptq
    squeezer_bn_adapted_onnx: float | None = None  # default init incl. BatchNorm adaptation (informative)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (floored at 1e-4, as the zoo's parity)."""
    return float(np.max(np.abs(actual - expected)) / max(float(np.max(np.abs(expected))), 1e-4))


def _batches(spec: ZooModel, n: int, batch: int, seed: int) -> list[torch.Tensor]:
    return [spec.example_input(batch, seed=seed + i) for i in range(max(1, n // batch))]


def _run_onnx(path: Path, batches: list[torch.Tensor]) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x.numpy()})[0] for x in batches])


def ort_ptq(
    fp32_path: Path,
    calibration: list[torch.Tensor],
    out: Path,
    reduce_range: bool = False,
    op_types: list[str] | None = None,
) -> Path:
    """onnxruntime's min-max post-training quantization (QDQ, per-channel int8 weights, uint8
    activations) of the FP32 file, calibrated on `calibration` batches fed to its first input: the
    yardstick of every benchmark. `reduce_range`: 7-bit weights (onnxruntime's advice for CPUs without
    VNNI); `op_types`: the ops to put QDQ around (None: onnxruntime's default list)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    name = next(i.name for i in graph.input if i.name not in initializers)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: x.numpy()} for x in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    quantize_static(
        str(fp32_path),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
        calibrate_method=CalibrationMethod.MinMax,
        reduce_range=reduce_range,
        op_types_to_quantize=op_types,
    )
    return out


def squeezer_int8(
    model: nn.Module,
    spec: ZooModel,
    calibration: list[torch.Tensor],
    compression: dict[str, Any] | None = None,
    target_runtime: str | None = None,
) -> tuple[Any, nn.Module]:
    """(controller, compressed model) after Squeezer's initialization on `calibration`, no training;
    `compression` defaults to the plain INT8 section with range init on all calibration samples;
    `target_runtime` is the config's top-level key (placement for that runtime)."""
    from squeezer import NNCFConfig, create_compressed_model, register_default_init_args

    samples = sum(len(x) for x in calibration)
    section = compression or {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": samples}}}
    top = {"target_runtime": target_runtime} if target_runtime else {}
    config = NNCFConfig.from_dict(
        {"input_info": {"sample_size": [1, *spec.input_shape[1:]]}, "compression": section, **top}
    )
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.cat(calibration), torch.zeros(samples, dtype=torch.long)),
        batch_size=len(calibration[0]),
    )
    register_default_init_args(config, loader)
    ctrl, compressed = create_compressed_model(copy.deepcopy(model), config, dump_graphs=False)
    return ctrl, compressed.eval()


def fp32_model(name: str, size: int, seed: int = 0) -> tuple[nn.Module, ZooModel]:
    """The zoo model at `size` x `size`, random init with `seed`, BatchNorm calibrated, eval mode."""
    spec = dataclasses.replace(ZOO[name], input_shape=(2, 3, size, size))
    return calibrate_batchnorm(build(name, seed=seed), spec), spec


def _section(samples: int, overflow_fix: str, bn_adaptation: bool) -> dict[str, Any]:
    initializer: dict[str, Any] = {"range": {"num_init_samples": samples}}
    if not bn_adaptation:
        initializer["batchnorm_adaptation"] = {"num_bn_adaptation_samples": 0}
    return {"algorithm": "quantization", "overflow_fix": overflow_fix, "initializer": initializer}


def _errors_one_seed(
    name: str,
    size: int,
    calibration_samples: int,
    eval_samples: int,
    batch: int,
    seed: int,
    bn_adaptation: bool,
    target_runtime: str | None = None,
) -> dict[str, float]:
    model, spec = fp32_model(name, size, seed)
    calibration = _batches(spec, calibration_samples, batch, seed=1000)
    held_out = _batches(spec, eval_samples, batch, seed=2000)
    with torch.no_grad():
        expected = torch.cat([model(x) for x in held_out]).numpy()
    samples = sum(len(x) for x in calibration)
    variants = {"7bit": _section(samples, "enable", False), "8bit": _section(samples, "disable", False)}
    if bn_adaptation:
        variants["bn_adapted"] = _section(samples, "enable", True)
    errors: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for key, section in variants.items():
            ctrl, compressed = squeezer_int8(model, spec, calibration, section, target_runtime)
            if key == "7bit":
                with torch.no_grad():
                    errors["torch"] = relative_error(torch.cat([compressed(x) for x in held_out]).numpy(), expected)
            path = ctrl.export_model(str(folder / f"{key}.onnx"), verify=False)  # compared with FP32 below
            errors[key] = relative_error(_run_onnx(path, held_out), expected)
        fp32_path = folder / "fp32.onnx"
        torch.onnx.export(
            model,
            (held_out[0],),
            str(fp32_path),
            input_names=["input"],
            dynamic_axes={"input": {0: "batch"}},
            dynamo=False,
        )
        for key, reduce_range in (("ort7", True), ("ort8", False)):
            path = ort_ptq(fp32_path, calibration, folder / f"{key}.onnx", reduce_range=reduce_range)
            errors[key] = relative_error(_run_onnx(path, held_out), expected)
    return errors


def measure(
    name: str,
    size: int = 64,
    calibration_samples: int = 32,
    eval_samples: int = 16,
    batch: int = 8,
    seeds: int = 1,
    bn_adaptation: bool = False,
    target_runtime: str | None = None,
) -> PTQResult:
    """Squeezer's range-init error and onnxruntime PTQ's error on one zoo CNN, averaged over `seeds`
    random models (one model's error depends on its particular rounding pattern by +-50%);
    `target_runtime`: Squeezer's placement for that runtime (config key) instead of NNCF's."""
    runs = [
        _errors_one_seed(name, size, calibration_samples, eval_samples, batch, seed, bn_adaptation, target_runtime)
        for seed in range(seeds)
    ]
    mean = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
    return PTQResult(
        model=name,
        size=size,
        calibration_samples=calibration_samples,
        seeds=seeds,
        squeezer_torch=mean["torch"],
        squeezer_onnx=mean["7bit"],
        ort_ptq_7bit=mean["ort7"],
        ratio_7bit=mean["7bit"] / mean["ort7"],
        squeezer_8bit_onnx=mean["8bit"],
        ort_ptq=mean["ort8"],
        ratio_8bit=mean["8bit"] / mean["ort8"],
        squeezer_bn_adapted_onnx=mean.get("bn_adapted"),
    )
