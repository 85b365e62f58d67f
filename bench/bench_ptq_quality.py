"""Post-training INT8 quality: Squeezer's range initialization vs onnxruntime's min-max PTQ.

For each zoo CNN (random init, BatchNorm calibrated, 64x64 inputs, 32 calibration samples, 16 held-out
samples, averaged over 3 random models): the relative max error of the INT8 output against FP32, for
Squeezer's range init (exported ONNX in onnxruntime) and for `onnxruntime.quantization.quantize_static`
(QDQ, per-channel) of the FP32 ONNX file on the same calibration batches, at the same weight precision:
7-bit weights (Squeezer's default overflow_fix, onnxruntime's reduce_range) and 8-bit weights
(overflow_fix "disable", onnxruntime's default). Prints a table, writes bench/results/ptq_quality.json.

    python bench/bench_ptq_quality.py                      # all CNNs, 3 seeds
    python bench/bench_ptq_quality.py --models mobilenet_v2 --seeds 1
    python bench/bench_ptq_quality.py --target-runtime onnxruntime   # writes ptq_quality_onnxruntime.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
import warnings
from pathlib import Path

from squeezer.examples.zoo import prepare_torchvision

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--calibration-samples", type=int, default=32)
    parser.add_argument("--no-bn-adaptation-column", action="store_true", help="skip the informative column")
    parser.add_argument("--target-runtime", default=None, help='"onnxruntime": that placement instead of NNCF\'s')
    parser.add_argument("--out", type=Path, default=None, help="default ptq_quality[_<target runtime>].json")
    args = parser.parse_args()

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)  # onnxruntime's quantizer logs advice for every file
    prepare_torchvision()
    import onnxruntime as ort
    import torch

    from squeezer.examples.ptq_check import CNNS, measure

    ort.set_default_logger_severity(3)
    torch.set_num_threads(1)
    rows = []
    header = (
        f"{'model':<20}{'sq 7-bit':>10}{'ORT 7-bit':>11}{'ratio':>7}{'sq 8-bit':>10}{'ORT 8-bit':>11}"
        f"{'ratio':>7}{'sq +BN adapt':>14}{'s':>6}"
    )
    print(header)
    for name in args.models or CNNS:
        start = time.perf_counter()
        r = measure(
            name,
            size=args.size,
            calibration_samples=args.calibration_samples,
            seeds=args.seeds,
            bn_adaptation=not args.no_bn_adaptation_column,
            target_runtime=args.target_runtime,
        )
        seconds = time.perf_counter() - start
        bn = f"{r.squeezer_bn_adapted_onnx:.4f}" if r.squeezer_bn_adapted_onnx is not None else "-"
        print(
            f"{name:<20}{r.squeezer_onnx:>10.4f}{r.ort_ptq_7bit:>11.4f}{r.ratio_7bit:>6.2f}x"
            f"{r.squeezer_8bit_onnx:>10.4f}{r.ort_ptq:>11.4f}{r.ratio_8bit:>6.2f}x{bn:>14}{seconds:>6.0f}",
            flush=True,
        )
        rows.append({**r.to_dict(), "seconds": round(seconds, 1)})
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "metric": "max |int8 - fp32| / max |fp32| on 16 held-out samples, mean over seeds",
        "target_runtime": args.target_runtime,
        "models": rows,
        "worst_ratio_7bit": max(r["ratio_7bit"] for r in rows),
        "worst_ratio_8bit": max(r["ratio_8bit"] for r in rows),
    }
    if args.out is None:
        args.out = RESULTS / (f"ptq_quality_{args.target_runtime}.json" if args.target_runtime else "ptq_quality.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"worst ratio: {result['worst_ratio_7bit']:.2f}x (7-bit), {result['worst_ratio_8bit']:.2f}x (8-bit)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
