"""Post-training quantization (`squeezer.compression.quantize`) against the tools users would pick instead.

Four cases, side by side in one run (2 threads; a shared 2-core machine, so times are indicative):
- minilm: the real pretrained all-MiniLM-L6-v2 at 128 tokens, default PTQ call for transformers
  (`model_type=TRANSFORMER`, no scopes): embedding cosine to FP32 in torch, onnxruntime and OpenVINO,
  INT8 vs FP32 latency in onnxruntime (batch 1, interleaved rounds), file size, PTQ time;
- resnet18: torchvision ResNet-18 at 224x224 (random init, BatchNorm calibrated), 300 calibration
  samples: relative max output error vs FP32 on 32 held-out samples and time, for Squeezer's PTQ
  (torch and its exported ONNX in onnxruntime), onnxruntime's `quant_pre_process` + `quantize_static`
  and NNCF's `nncf.quantize`, all three on the same weights and batches;
- digits_ac: the digits CNN with two channels x1000 (`squeezer.examples.outliers`): plain PTQ,
  PTQ with cross-layer equalization, and accuracy control (max_drop 0.1 points) with its validations;
- zoo: the 14 zoo CNNs (224x224) and 3 image transformers, the same three tools on the same weights and
  batches: PTQ time and output error (2 random models each), then INT8 latency in onnxruntime and
  OpenVINO, the files timed side by side (about 40 min on 2 cores).
NNCF's figures come from `bench/nncf_ptq_runner.py` run in a separate venv (`--nncf-python`; never a
dependency). Prints a table, writes bench/results/ptq.json.

    python bench/bench_ptq.py [--cases minilm resnet18 digits_ac zoo] [--nncf-python /work/nncf-venv/bin/python]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import platform
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
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
    from bench_runtime import side_by_side

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
        timing = side_by_side(runners, one, rounds=9, seconds=0.4)  # the zoo's rotating rounds
        result["fp32_ms"], result["int8_ms"] = timing["ms"]["fp32"], timing["ms"]["int8"]
        result["speedup_onnxruntime"] = timing["speedup"]["int8"]
        # the fastest call of each: the kernels' cost; the median's ratio moved from 1.5x to 1.9x between runs
        result["speedup_onnxruntime_best"] = timing["speedup_best"]["int8"]
    return result


def _ptq_case(
    folder: Path, name: str, size: int, seed: int, samples: int, batch: int, transformer: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One FP32 model and its data, quantized by Squeezer (torch and its ONNX in onnxruntime) and by
    `quant_pre_process` + `quantize_static`, with the files NNCF's runner needs to quantize the very same
    weights on the very same batches: (figures, the runner's manifest entry). Files stay in `folder`."""
    import torch
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from safetensors.torch import save_model

    from squeezer.compression import AdvancedQuantizationParameters, ModelType, controller_of, quantize
    from squeezer.compression import Dataset as PTQDataset
    from squeezer.examples.ptq_check import _batches, _run_onnx, fp32_model, ort_ptq, relative_error

    folder.mkdir(parents=True, exist_ok=True)
    model, spec = fp32_model(name, size, seed)
    with torch.no_grad():  # torchvision and timm start classifier heads at zero: outputs would be 0
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and not bool(module.weight.any()):
                module.weight.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(seed))
    calibration = _batches(spec, samples, batch, seed=1000)
    held_out = _batches(spec, 32, 8, seed=2000)
    with torch.no_grad():
        expected = torch.cat([model(x) for x in held_out]).numpy()
    save_model(model, str(folder / "weights.safetensors"))
    np.savez(
        folder / "data.npz",
        calibration=np.stack([x.numpy() for x in calibration]),
        held_out=np.stack([x.numpy() for x in held_out]),
        expected=expected,
    )
    row: dict[str, Any] = {}
    # the default call, and (CNNs; a transformer's default is onnxruntime's already) the placement for
    # onnxruntime (`target_runtime`), the file a user deploying there exports
    variants = {"squeezer": None} if transformer else {"squeezer": None, "squeezer_onnxruntime": "onnxruntime"}
    for key, runtime in variants.items():
        started = time.perf_counter()  # `quantize` was imported above: like NNCF's, the import is not timed
        quantized = quantize(
            model,
            PTQDataset(calibration),
            subset_size=sum(len(x) for x in calibration),
            model_type=ModelType.TRANSFORMER if transformer else None,
            advanced_parameters=AdvancedQuantizationParameters(target_runtime=runtime),
        )
        row[f"{key}_s"] = time.perf_counter() - started
        if runtime is None:
            with torch.no_grad():
                outputs = torch.cat([quantized(x) for x in held_out]).numpy()
            row["squeezer_torch"] = relative_error(outputs, expected)
        path = controller_of(quantized).export_model(str(folder / f"{key}.onnx"), verify=False)  # errors below
        row[key] = relative_error(_run_onnx(path, held_out), expected)
    fp32 = folder / "fp32.onnx"
    torch.onnx.export(
        model, (held_out[0],), str(fp32), input_names=["input"], dynamic_axes={"input": {0: "b"}}, dynamo=False
    )
    started = time.perf_counter()
    try:
        quant_pre_process(str(fp32), str(folder / "pre.onnx"))
        source = folder / "pre.onnx"
    except Exception:  # its symbolic shape inference fails on some ViT graphs: quantize as is
        source = fp32
        row["no_pre_process"] = 1.0
    ort_path = ort_ptq(source, calibration, folder / "quantize_static.onnx")
    row["ort_s"] = time.perf_counter() - started
    row["quantize_static"] = relative_error(_run_onnx(ort_path, held_out), expected)
    entry = {
        "id": folder.name,
        "name": name,
        "weights": str(folder / "weights.safetensors"),
        "data": str(folder / "data.npz"),
        "transformer": transformer,
        "openvino": seed == 0,
        "out_dir": str(folder),
    }
    return row, entry


def _nncf_models(python: str | None, entries: list[dict[str, Any]], folder: Path) -> dict[str, Any]:
    """NNCF's runner on the models `_ptq_case` wrote: {entry id: its row}, or {} without the NNCF venv."""
    if not python or not Path(python).exists():
        return {}
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"models": entries}))
    out = folder / "nncf.json"
    runner = str(Path(__file__).parent / "nncf_ptq_runner.py")
    run = subprocess.run(
        [python, runner, "models", "--manifest", str(manifest), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if run.returncode != 0 or not out.exists():
        tail = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"exit {run.returncode}"
        return {entry["id"]: {"error": tail} for entry in entries}
    result = json.loads(out.read_text())
    return {key: {**row, "nncf_version": result["nncf_version"]} for key, row in result["models"].items()}


def resnet18(nncf_python: str | None, samples: int = 300) -> dict[str, Any]:
    """torchvision ResNet-18 at 224x224 (random init, BatchNorm calibrated), 300 calibration samples in
    batches of 10: time and output error of Squeezer's PTQ, quantize_static's and NNCF's on the same weights."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "resnet18-224"
        row, entry = _ptq_case(folder, "resnet18", 224, 0, samples, 10, transformer=False)
        entry["openvino"] = False
        nncf = _nncf_models(nncf_python, [entry], Path(tmp)).get(entry["id"], {})
    squeezer = {
        "squeezer_seconds": row["squeezer_s"],
        "squeezer_error_torch": row["squeezer_torch"],
        "squeezer_error_onnxruntime": row["squeezer"],
        "quantize_static_seconds": row["ort_s"],
        "quantize_static_error": row["quantize_static"],
    }
    theirs = {key: value for key, value in nncf.items() if key not in ("onnx", "openvino")}
    return {"squeezer": squeezer, "nncf": theirs or None}


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
ZOO_FILES = {
    "fp32": "fp32.onnx",
    "squeezer": "squeezer.onnx",  # the default call: NNCF's placement, the one for OpenVINO
    "squeezer_onnxruntime": "squeezer_onnxruntime.onnx",  # target_runtime="onnxruntime" (CNNs only)
    "quantize_static": "quantize_static.onnx",
}


def zoo(
    nncf_python: str | None,
    models: list[str] | None = None,
    seeds: int = 2,
    size: int = 224,
    samples: int = 64,
    rounds: int = 7,
) -> dict[str, Any]:
    """Every zoo CNN (at `size`) and image transformer (at its own size), random init, BatchNorm calibrated:
    PTQ time and relative max output error of Squeezer, `quant_pre_process` + `quantize_static` and NNCF's
    `nncf.quantize`, all on the same FP32 weights and calibration batches, averaged over `seeds` random
    models; then, on seed 0, INT8 latency at batch 1 in onnxruntime and OpenVINO, the four files timed
    side by side (NNCF's: its QDQ ONNX after strip, and in OpenVINO its own IR from ov.convert_model)."""
    from squeezer.examples.zoo import BENCHMARK_CNNS, ZOO

    names = tuple(models or (*BENCHMARK_CNNS, *ZOO_TRANSFORMERS))
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        per_seed: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        entries = []
        for name in names:
            transformer = name in ZOO_TRANSFORMERS
            for seed in range(seeds):
                native = ZOO[name].input_shape[-1]  # the transformers take their own image size only
                row, entry = _ptq_case(
                    work / f"{name}-{seed}", name, native if transformer else size, seed, samples, 8, transformer
                )
                per_seed[name].append(row)
                entries.append(entry)
            print(f"{name:<22}" + "  ".join(f"{k} {v:.4f}" for k, v in per_seed[name][0].items()), flush=True)
        nncf = _nncf_models(nncf_python, entries, work)
        for name in names:
            for seed, row in enumerate(per_seed[name]):
                theirs = nncf.get(f"{name}-{seed}", {})
                row.update({f"nncf_{k}": v for k, v in theirs.items() if isinstance(v, float)})
                if "error" in theirs or "onnx_error" in theirs:
                    rows.setdefault(name, {}).setdefault("nncf_errors", []).append(
                        theirs.get("error") or theirs.get("onnx_error")
                    )
            keys = set.intersection(*(set(r) for r in per_seed[name]))
            row = rows.setdefault(name, {})
            row.update({key: float(np.mean([r[key] for r in per_seed[name]])) for key in sorted(keys)})
            row["ratio"] = row["squeezer"] / max(row["quantize_static"], 1e-12)
            if "nncf_error_onnxruntime" in row:
                row["ratio_nncf"] = row["squeezer"] / max(row["nncf_error_onnxruntime"], 1e-12)
            row["speed"] = _zoo_speed(work / f"{name}-0", nncf.get(f"{name}-0", {}), rounds)
            print(name, json.dumps(row, default=str), flush=True)
    versions = {row.get("nncf_version") for row in nncf.values()} - {None}
    return {"squeezer": rows, "nncf": {"nncf_version": versions.pop()} if versions else None}


def _input_name(path: Path) -> str:
    """The first (only) input of an ONNX file or an OpenVINO IR: each tool names it its own way."""
    if path.suffix == ".xml":
        from squeezer.compression.export.openvino_import import import_openvino_quietly

        return str(import_openvino_quietly().Core().read_model(str(path)).inputs[0].get_any_name())
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return next(i.name for i in graph.input if i.name not in initializers)


def _zoo_speed(folder: Path, nncf: dict[str, Any], rounds: int) -> dict[str, Any]:
    """FP32 / INT8 latency of one model's files at batch 1, 2 threads, per runtime (side_by_side rounds)."""
    from bench_runtime import side_by_side

    from squeezer.runtime.latency import load_runner

    data = np.load(folder / "data.npz")
    feed = {"input": data["held_out"][0][:1]}
    speed: dict[str, Any] = {}
    for runtime in ("onnxruntime", "openvino"):
        files = {key: folder / file for key, file in ZOO_FILES.items() if (folder / file).exists()}
        nncf_file = nncf.get("openvino") if runtime == "openvino" else None
        if nncf_file or nncf.get("onnx"):
            files["nncf"] = Path(nncf_file or nncf["onnx"])
        runners = {}
        for key, path in files.items():
            try:
                run, name = load_runner(path, runtime, threads=2), _input_name(path)
                runners[key] = lambda feed, run=run, name=name: run({name: feed["input"]})
            except Exception as exc:  # one file that a runtime cannot load keeps the others' figures
                speed.setdefault("load_errors", {})[f"{runtime}:{key}"] = str(exc).strip().splitlines()[-1][:300]
        speed[runtime] = side_by_side(runners, feed, rounds, 0.4)
        if runtime == "openvino" and nncf_file:
            speed[runtime]["nncf_file"] = "ov.convert_model IR"
    return speed


CASES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "minilm": lambda args: {"squeezer": minilm(), "nncf": _nncf(args.nncf_python, "minilm")},
    "resnet18": lambda args: resnet18(args.nncf_python),
    "digits_ac": lambda args: {"squeezer": digits_ac(), "nncf": _nncf(args.nncf_python, "digits_ac")},
    "zoo": lambda args: zoo(args.nncf_python, args.models, seeds=args.seeds),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=["minilm", "resnet18", "digits_ac"], help=f"of {list(CASES)}")
    parser.add_argument("--nncf-python", default="/work/nncf-venv/bin/python", help="python of a venv with NNCF")
    parser.add_argument("--out", type=Path, default=RESULTS / "ptq.json")
    parser.add_argument("--models", nargs="*", help="zoo: only these models (a trial run; not for the page)")
    parser.add_argument("--seeds", type=int, default=2, help="zoo: random models per architecture")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    import torch

    torch.set_num_threads(2)
    results: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "threads": 2}
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    for case in args.cases:
        results[case] = CASES[case](args)
        print(case, json.dumps(results[case], indent=1, default=str))
        args.out.write_text(json.dumps({**previous, **results}, indent=2, default=str) + "\n")  # after each case


if __name__ == "__main__":
    main()
