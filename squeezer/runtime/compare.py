"""FP32 against compressed latency of exported files on this CPU: what every job and every search reports.

A job compresses a model to make it faster, and on some architectures the INT8 file is slower than
the FP32 one it replaces (depthwise convs, SiLU gates, small transformers in onnxruntime). So every
job times both exported files, in onnxruntime and, when installed, OpenVINO, and says so in its
result and its log when the compressed model is not faster.

The measurement is bounded (`budget_s` of timed calls in all, at most `MAX_RUNS` calls per file and
runtime) so that a small job does not get noticeably slower; calls of the two files alternate, so
that a noisy neighbour on a shared CPU slows both alike.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from squeezer.compression.export.openvino_import import OpenVINOUnavailableError, import_openvino
from squeezer.runtime import RUNTIMES, load_runner, summarize, time_runner
from squeezer.runtime.latency import Runner

logger = logging.getLogger(__name__)
BUDGET_S = 2.0  # seconds of timed calls per job, over every runtime and both files
MAX_RUNS = 40  # timed calls per file and runtime; the median of 40 is steady enough for a warning


def measure(
    fp32_onnx: str | Path,
    compressed_onnx: str | Path,
    inputs: Mapping[str, np.ndarray],
    runtimes: Sequence[str] = RUNTIMES,
    budget_s: float = BUDGET_S,
    max_runs: int = MAX_RUNS,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """({runtime: {fp32_ms, compressed_ms, speedup, batch_size, runs}}, warnings) for the runtimes
    installed here; a warning for each runtime where the compressed file is not faster (speedup < 1),
    and for each that could not run a file (its figures are left out, the other runtimes' kept)."""
    available = [r for r in runtimes if _installed(r)]
    threads = _threads()
    batch = int(next(iter(inputs.values())).shape[0])
    report: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for runtime in available:
        try:
            fp32_ms, compressed_ms, paired, runs = _paired_medians(
                load_runner(fp32_onnx, runtime, threads),
                load_runner(compressed_onnx, runtime, threads),
                inputs,
                budget_s / len(available),
                max_runs,
            )
        except Exception as exc:  # one runtime that cannot load or run a file keeps the others' figures
            reason = (str(exc).strip().splitlines() or [""])[-1][:300]
            warnings.append(f"latency not measured in {runtime}: {type(exc).__name__}: {reason}")
            logger.warning("latency not measured in %s", runtime, exc_info=True)
            continue
        speedup = fp32_ms / compressed_ms
        report[runtime] = {
            "fp32_ms": fp32_ms,
            "compressed_ms": compressed_ms,
            "speedup": speedup,
            "paired_speedup": paired,
            "batch_size": batch,
            "runs": runs,
        }
        logger.info(
            "latency in %s, batch %d: FP32 %.3g ms, compressed %.3g ms (%.2fx; median of %d)",
            runtime,
            batch,
            fp32_ms,
            compressed_ms,
            speedup,
            runs,
        )
        if speedup < 1.0:
            warnings.append(
                f"the compressed model is not faster than FP32 in {runtime} on this worker's CPU: "
                f"{compressed_ms:.3g} ms against {fp32_ms:.3g} ms for a batch of {batch} ({speedup:.2f}x)"
            )
            logger.warning("%s", warnings[-1])
    return report, warnings


def _installed(runtime: str) -> bool:
    if runtime != "openvino":
        return importlib.util.find_spec(runtime) is not None
    try:
        import_openvino()  # without its telemetry, before squeezer.runtime imports it
    except OpenVINOUnavailableError:
        return False
    return True


def _threads() -> int | None:
    """The runtime's threads: OMP_NUM_THREADS when set (`squeezer serve --workers N` shares the cores out
    that way, and a runtime taking every core while another worker trains measures the contention)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def _paired_medians(
    fp32: Runner, compressed: Runner, inputs: Mapping[str, np.ndarray], budget_s: float, max_runs: int
) -> tuple[float, float, float, int]:
    """Median ms of each runner over alternating calls, after one untimed warm-up call each (the first
    call builds kernels for the input's shape), and the median of the pairs' FP32 / compressed ratios;
    as many pairs as fit in `budget_s`, judged by the first timed pair, at least one and at most
    `max_runs`."""
    fp32(inputs)
    compressed(inputs)
    times: dict[bool, list[float]] = {False: [], True: []}
    pairs = 1
    while len(times[True]) < pairs:
        times[False] += time_runner(fp32, inputs, warmup=0, repeats=1)
        times[True] += time_runner(compressed, inputs, warmup=0, repeats=1)
        if len(times[True]) == 1:
            pair_s = (times[False][0] + times[True][0]) / 1000.0
            pairs = max(1, min(max_runs, int(budget_s / max(pair_s, 1e-6))))
    ratios = [a / b for a, b in zip(times[False], times[True], strict=True)]
    fp32_ms = summarize(times[False], "fp32").median_ms
    return fp32_ms, summarize(times[True], "compressed").median_ms, statistics.median(ratios), pairs


def job_latency(
    fp32_model: Any, compressed_onnx: str | Path, sample: Any, workdir: str | Path
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """`measure` for a job: the original model exported to ONNX beside the job's compressed file (in
    `workdir`, removed afterwards; the user has that model already), both timed on `sample` (a
    batch of real inputs)."""
    import onnx

    from squeezer.compression.export.onnx_export import export_onnx

    names = [i.name for i in onnx.load(str(compressed_onnx), load_external_data=False).graph.input]
    fp32_onnx = Path(workdir) / "fp32_for_latency.onnx"
    try:
        export_onnx(fp32_model, fp32_onnx, (sample[:1],), input_names=names, verify=False)
        return measure(fp32_onnx, compressed_onnx, {names[0]: sample.numpy()})
    finally:
        fp32_onnx.unlink(missing_ok=True)
