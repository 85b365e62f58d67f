"""Running exported models: latency of an ONNX file in onnxruntime or OpenVINO on this machine's CPU."""

from squeezer.runtime.latency import (
    RUNTIMES,
    LatencyResult,
    Runner,
    RuntimeUnavailableError,
    UnknownRuntimeError,
    load_runner,
    measure_latency,
    summarize,
    time_runner,
)

__all__ = [
    "RUNTIMES",
    "LatencyResult",
    "Runner",
    "RuntimeUnavailableError",
    "UnknownRuntimeError",
    "load_runner",
    "measure_latency",
    "summarize",
    "time_runner",
]
