"""Latency of an ONNX file on this machine's CPU, in onnxruntime or in OpenVINO.

OpenVINO reads the QDQ ONNX file as is (`Core().compile_model(path, "CPU")`) and fuses each
QuantizeLinear/DequantizeLinear pair around an op into an INT8 kernel, as it does for NNCF's export.

Two steps, so that a benchmark can interleave variants on a noisy machine: `load_runner` builds a
session once, `time_runner` times calls of it; `measure_latency` does both for one file.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from squeezer.compression.export.openvino_import import import_openvino_quietly
from squeezer.errors import SqueezerError

Runtime = Literal["onnxruntime", "openvino"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)

Runner = Callable[[Mapping[str, np.ndarray]], Any]
"""One inference: feeds the named inputs, returns the runtime's outputs."""


class UnknownRuntimeError(SqueezerError, ValueError):
    """A runtime name that is not one of `RUNTIMES`."""


class RuntimeUnavailableError(SqueezerError, ImportError):
    """The runtime's Python package is not installed."""


@dataclass(frozen=True)
class LatencyResult:
    """Wall-clock time of one inference call, over `runs` calls after the warm-up."""

    median_ms: float
    p90_ms: float
    runs: int
    runtime: str
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_runner(onnx_path: str | Path, runtime: str = "onnxruntime", threads: int | None = None) -> Runner:
    """A callable that runs `onnx_path` once in `runtime` with `threads` CPU threads (None: the
    runtime's default). Raises `UnknownRuntimeError` / `RuntimeUnavailableError` / `FileNotFoundError`."""
    if runtime not in RUNTIMES:
        raise UnknownRuntimeError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be a positive number of CPU threads or None, got {threads}")
    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    if runtime == "onnxruntime":
        return _onnxruntime_runner(path, threads)
    return _openvino_runner(path, threads)


def _onnxruntime_runner(path: Path, threads: int | None) -> Runner:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeUnavailableError("onnxruntime is not installed: pip install onnxruntime") from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(inputs: Mapping[str, np.ndarray]) -> Any:
        return session.run(None, _feed(inputs, names))

    return run


def _openvino_runner(path: Path, threads: int | None) -> Runner:
    try:
        ov = import_openvino_quietly()
    except ImportError as exc:
        raise RuntimeUnavailableError("openvino is not installed: pip install squeezer[openvino]") from exc
    # f32 for what stays FP32: on CPUs with bf16 instructions OpenVINO may otherwise pick bf16, and the
    # FP32 baseline would no longer be FP32
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    names = [i.get_any_name() for i in compiled.inputs]
    request = compiled.create_infer_request()

    def run(inputs: Mapping[str, np.ndarray]) -> Any:
        return request.infer(_feed(inputs, names))

    return run


def _feed(inputs: Mapping[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    missing = [n for n in names if n not in inputs]
    extra = [n for n in inputs if n not in names]
    if missing or extra:
        raise ValueError(f"the model's inputs are {names}; missing {missing}, not inputs of the model {extra}")
    return {n: inputs[n] for n in names}


def time_runner(
    run: Runner,
    inputs: Mapping[str, np.ndarray],
    warmup: int = 3,
    repeats: int = 20,
    max_seconds: float = 10.0,
    min_repeats: int = 3,
) -> list[float]:
    """Milliseconds of each timed call: `warmup` untimed calls, then `repeats` timed ones, stopping
    early once `max_seconds` of timing have passed (but never before `min_repeats` calls)."""
    if repeats < 1 or warmup < 0 or max_seconds <= 0:
        raise ValueError(f"need repeats >= 1, warmup >= 0, max_seconds > 0; got {repeats}, {warmup}, {max_seconds}")
    for _ in range(warmup):
        run(inputs)
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < repeats:
        start = time.perf_counter()
        run(inputs)
        end = time.perf_counter()
        times.append((end - start) * 1000.0)
        if end > deadline and len(times) >= min(min_repeats, repeats):
            break
    return times


def summarize(times: list[float], runtime: str, threads: int | None = None) -> LatencyResult:
    """Median and 90th percentile (nearest rank) of per-call milliseconds."""
    if not times:
        raise ValueError("no timed runs to summarize")
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return LatencyResult(statistics.median(ordered), p90, len(ordered), runtime, threads)


def measure_latency(
    onnx_path: str | Path,
    inputs: Mapping[str, np.ndarray],
    runtime: str = "onnxruntime",
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 20,
    max_seconds: float = 10.0,
) -> LatencyResult:
    """Median and p90 latency of one inference of `onnx_path` on `inputs` (input name -> array)."""
    run = load_runner(onnx_path, runtime, threads)
    return summarize(time_runner(run, inputs, warmup, repeats, max_seconds), runtime, threads)
