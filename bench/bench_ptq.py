"""Post-training quantization (`squeezer.compression.quantize`) against the tools users would pick instead.

Three cases, side by side in one run (2 threads; a shared 2-core machine, so times are indicative):
- minilm: the real pretrained all-MiniLM-L6-v2 at 128 tokens, default PTQ call for transformers
  (`model_type=TRANSFORMER`, no scopes): embedding cosine to FP32 in torch, onnxruntime and OpenVINO,
  INT8 vs FP32 latency in onnxruntime (batch 1, interleaved rounds), file size, PTQ time;
- resnet18: torchvision ResNet-18 at 224x224 (random init, BatchNorm calibrated), 300 calibration
  samples: relative max output error vs FP32 on 32 held-out samples and time, for Squeezer's PTQ
  (torch and its exported ONNX in onnxruntime) and onnxruntime's `quant_pre_process` + `quantize_static`;
- digits_ac: the digits CNN with two channels x1000 (`squeezer.examples.outliers`): plain PTQ,
  PTQ with cross-layer equalization, and accuracy control (max_drop 0.1 points) with its validations.
NNCF's figures come from `bench/nncf_ptq_runner.py` run in a separate venv (`--nncf-python`; never a
dependency). Prints a table, writes bench/results/ptq.json.

    python bench/bench_ptq.py [--cases minilm resnet18 digits_ac zoo] [--nncf-python /work/nncf-venv/bin/python]
- zoo: the 14 zoo CNNs and 3 image transformers, PTQ output error against `quantize_static`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import platform
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"


def _nncf(python: str | None, case: str) -> dict[str, Any] | None:
    if not python or not Path(python).exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "nncf.json"
        run = subprocess.run(
            [python, str(Path(__file__).parent / "nncf_ptq_runner.py"), case, "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if run.returncode != 0 or not out.exists():
            return {"error": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"exit {run.returncode}"}
        return json.loads(out.read_text())


def minilm(length: int = 128) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    import squeezer.compression as nncf
    from squeezer.examples.minilm import load_minilm, token_batches
    from squeezer.runtime.latency import load_runner

    model, tokenizer = load_minilm()
    # the sentences NNCF's runner calibrates and evaluates on, so that both columns see the same data
    spec = importlib.util.spec_from_file_location("minilm_sentences", Path(__file__).parent / "minilm_sentences.py")
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    calibration = token_batches(tokenizer, runner.CALIBRATION_SENTENCES, length, 8)
    evaluation = token_batches(tokenizer, runner.EVAL_SENTENCES, length, 8)
    with torch.no_grad():
        reference = torch.cat([model(**x) for x in evaluation])
    started = time.perf_counter()
    quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=64, model_type=nncf.ModelType.TRANSFORMER)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        torch_cos = F.cosine_similarity(torch.cat([quantized(**x) for x in evaluation]), reference)
    result: dict[str, Any] = {"ptq_seconds": seconds, "cosine_torch_min": float(torch_cos.min())}
    with tempfile.TemporaryDirectory() as tmp:
        names = ["input_ids", "attention_mask"]
        int8 = nncf.controller_of(quantized).export_model(str(Path(tmp) / "int8.onnx"), input_names=names)
        fp32 = Path(tmp) / "fp32.onnx"
        example = evaluation[0]
        torch.onnx.export(
            model,
            (),
            str(fp32),
            kwargs=example,
            input_names=["input_ids", "attention_mask"],
            dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}},
            dynamo=False,
        )
        result["size_ratio"] = int8.stat().st_size / fp32.stat().st_size
        feeds = [{k: v.numpy() for k, v in x.items()} for x in evaluation]
        for runtime in ("onnxruntime", "openvino"):
            run = load_runner(int8, runtime, threads=2)
            out = torch.from_numpy(np.concatenate([np.asarray(run(f)[0]) for f in feeds]))
            result[f"cosine_{runtime}_min"] = float(F.cosine_similarity(out, reference).min())
        one = {k: v[:1] for k, v in feeds[0].items()}
        runners = {"fp32": load_runner(fp32, "onnxruntime", threads=2), "int8": load_runner(int8, "onnxruntime", 2)}
        times: dict[str, list[float]] = {"fp32": [], "int8": []}
        for _ in range(7):  # interleaved rounds: both files see the same machine load
            for key, run in runners.items():
                for _ in range(3):
                    run(one)
                start = time.perf_counter()
                for _ in range(20):
                    run(one)
                times[key].append((time.perf_counter() - start) / 20 * 1000)
        result["fp32_ms"] = statistics.median(times["fp32"])
        result["int8_ms"] = statistics.median(times["int8"])
        result["speedup_onnxruntime"] = result["fp32_ms"] / result["int8_ms"]
    return result


def resnet18(samples: int = 300) -> dict[str, Any]:
    import torch

    import squeezer.compression as nncf
    from squeezer.examples.ptq_check import _batches, _run_onnx, fp32_model, ort_ptq, relative_error

    model, spec = fp32_model("resnet18", 224)
    calibration = _batches(spec, samples, 10, seed=1000)
    held_out = _batches(spec, 32, 8, seed=2000)
    with torch.no_grad():
        expected = torch.cat([model(x) for x in held_out]).numpy()
    result: dict[str, Any] = {}
    started = time.perf_counter()
    quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=samples)
    result["squeezer_seconds"] = time.perf_counter() - started
    with torch.no_grad():
        result["squeezer_error_torch"] = relative_error(torch.cat([quantized(x) for x in held_out]).numpy(), expected)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        path = nncf.controller_of(quantized).export_model(str(folder / "sq.onnx"))
        result["squeezer_export_seconds"] = time.perf_counter() - started
        result["squeezer_error_onnxruntime"] = relative_error(_run_onnx(path, held_out), expected)
        fp32 = folder / "fp32.onnx"
        torch.onnx.export(
            model, (held_out[0],), str(fp32), input_names=["input"], dynamic_axes={"input": {0: "batch"}}, dynamo=False
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        started = time.perf_counter()
        quant_pre_process(str(fp32), str(folder / "pre.onnx"))
        ort_path = ort_ptq(folder / "pre.onnx", calibration, folder / "ort.onnx")
        result["quantize_static_seconds"] = time.perf_counter() - started
        result["quantize_static_error"] = relative_error(_run_onnx(ort_path, held_out), expected)
    return result


def digits_ac() -> dict[str, Any]:
    import squeezer.compression as nncf
    from squeezer.examples.digits import accuracy
    from squeezer.examples.outliers import top1, trained_plain_cnn, with_outlier_channels

    model, train, val = trained_plain_cnn()
    outliers = with_outlier_channels(model, val)
    calibration = nncf.Dataset(train, lambda item: item[0])
    plain = nncf.AdvancedQuantizationParameters(cross_layer_equalization=False)
    result: dict[str, Any] = {"fp32": accuracy(outliers, val)}
    result["ptq_plain"] = accuracy(nncf.quantize(outliers, calibration, advanced_parameters=plain), val)
    result["ptq_default"] = accuracy(nncf.quantize(outliers, calibration), val)
    started = time.perf_counter()
    controlled = nncf.quantize_with_accuracy_control(
        outliers,
        calibration,
        nncf.Dataset(val, lambda item: item[0]),
        top1,
        max_drop=0.1,
        advanced_quantization_parameters=plain,
    )
    result["ac_seconds"] = time.perf_counter() - started
    report = nncf.controller_of(controlled).ptq_report.accuracy_control
    result["ac_accuracy"] = accuracy(controlled, val)
    result["ac_validations"] = report["validations"]
    result["ac_fp32_layers"] = [g["name"] for g in report["fp32_groups"]]
    return result


ZOO_TRANSFORMERS = ("vit_tiny", "deit_tiny", "hf_vit")


def zoo(seeds: int = 2, size: int = 64, samples: int = 64) -> dict[str, Any]:
    """Every zoo CNN and image transformer (random init, BatchNorm calibrated, 64x64): relative max output
    error of Squeezer's PTQ (its exported ONNX in onnxruntime) and of `quant_pre_process` + `quantize_static`
    on the same FP32 weights and calibration batches, averaged over `seeds` random models."""
    import torch
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import squeezer.compression as nncf
    from squeezer.examples.ptq_check import _batches, _run_onnx, fp32_model, ort_ptq, relative_error
    from squeezer.examples.zoo import BENCHMARK_CNNS, ZOO

    rows: dict[str, Any] = {}
    for name in (*BENCHMARK_CNNS, *ZOO_TRANSFORMERS):
        errors: dict[str, list[float]] = {"squeezer": [], "quantize_static": [], "squeezer_s": [], "ort_s": []}
        for seed in range(seeds):
            native = ZOO[name].input_shape[-1]  # the transformers take their own image size only
            model, spec = fp32_model(name, native if name in ZOO_TRANSFORMERS else size, seed)
            with torch.no_grad():  # torchvision and timm start classifier heads at zero: outputs would be 0
                for module in model.modules():
                    if isinstance(module, torch.nn.Linear) and not bool(module.weight.any()):
                        module.weight.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(seed))
            calibration = _batches(spec, samples, 8, seed=1000)
            held_out = _batches(spec, 32, 8, seed=2000)
            with torch.no_grad():
                expected = torch.cat([model(x) for x in held_out]).numpy()
            model_type = nncf.ModelType.TRANSFORMER if name in ZOO_TRANSFORMERS else None
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                started = time.perf_counter()
                quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=samples, model_type=model_type)
                errors["squeezer_s"].append(time.perf_counter() - started)
                path = nncf.controller_of(quantized).export_model(str(folder / "sq.onnx"), verify=False)
                errors["squeezer"].append(relative_error(_run_onnx(path, held_out), expected))
                fp32 = folder / "fp32.onnx"
                torch.onnx.export(
                    model,
                    (held_out[0],),
                    str(fp32),
                    input_names=["input"],
                    dynamic_axes={"input": {0: "b"}},
                    dynamo=False,
                )
                started = time.perf_counter()
                try:
                    quant_pre_process(str(fp32), str(folder / "pre.onnx"))
                    source = folder / "pre.onnx"
                except Exception:  # its symbolic shape inference fails on some ViT graphs: quantize as is
                    source = fp32
                    errors.setdefault("no_pre_process", []).append(1.0)
                ort_path = ort_ptq(source, calibration, folder / "ort.onnx")
                errors["ort_s"].append(time.perf_counter() - started)
                errors["quantize_static"].append(relative_error(_run_onnx(ort_path, held_out), expected))
        row = {key: float(np.mean(values)) for key, values in errors.items()}
        row["ratio"] = row["squeezer"] / max(row["quantize_static"], 1e-12)
        rows[name] = row
        print(f"{name:<22}{row['squeezer']:>10.4f}{row['quantize_static']:>10.4f}{row['ratio']:>8.2f}", flush=True)
    return rows


CASES = {"minilm": minilm, "resnet18": resnet18, "digits_ac": digits_ac, "zoo": zoo}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=["minilm", "resnet18", "digits_ac"], help=f"of {list(CASES)}")
    parser.add_argument("--nncf-python", default="/work/nncf-venv/bin/python", help="python of a venv with NNCF")
    parser.add_argument("--out", type=Path, default=RESULTS / "ptq.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    import torch

    torch.set_num_threads(2)
    results: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "threads": 2}
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    for case in args.cases:
        nncf = _nncf(args.nncf_python, case) if case != "zoo" else None  # the runner has no zoo case
        results[case] = {"squeezer": CASES[case](), "nncf": nncf}
        print(case, json.dumps(results[case], indent=1, default=str))
        args.out.write_text(json.dumps({**previous, **results}, indent=2, default=str) + "\n")  # after each case


if __name__ == "__main__":
    main()
