"""Transformers in onnxruntime: FP32 vs Squeezer's INT8 export (vs onnxruntime's own quantize_static), at the
zoo's widths (32 wide, where per-op overhead dominates) and at realistic widths, with evidence of why.

Per model (random init; token models read 128 ids): FP32 `squeezer.export_onnx`, Squeezer `int8.json` (NNCF's
placement) and `int8_onnxruntime.json` ("target_runtime": "onnxruntime"), both min-max range init on 32
calibration samples and `ctrl.export_model`, and `ort_ptq` of the FP32 file. Reported:
- latency at 2 threads, batch 1 and 8, variants timed round by round (bench_runtime's `side_by_side`);
  ratio = FP32 ms / variant ms (> 1: faster than FP32);
- size = file bytes / FP32 file bytes, and the same for the constant tensors alone;
- parity = max |variant - fp32| / max |fp32| on a held-out batch;
- `fused`: the ops of onnxruntime's optimized INT8 graph that compute matrix products (MatMulIntegerToFloat,
  QLinearMatMul, QGemm run in integer; MatMul / FusedMatMul / Gemm in float);
- `profile_us`: onnxruntime's profiler, microseconds per run by op type at batch 1 (the per-op evidence where
  INT8 cannot be faster: QuantizeLinear / DequantizeLinear costs next to the matmuls they feed).

    python bench/bench_transformers.py                                  # every model, about 10 min on 2 cores
    python bench/bench_transformers.py --models bert,bert_l2_h768 --batch 1
Writes bench/results/transformers.json, merged with earlier runs by model.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
import torch
from bench_runtime import RESULTS, first_output, input_names, machine, side_by_side, squeezer_int8
from onnx import numpy_helper
from torch import nn

from squeezer.examples.ptq_check import ort_ptq
from squeezer.examples.zoo import VOCAB, ZOO, _Logits, build, import_torchvision, prepare_torchvision
from squeezer.runtime import load_runner

SEQ = 128
INTEGER_MATMULS = ("MatMulIntegerToFloat", "QLinearMatMul", "QGemm", "DynamicQuantizeMatMul", "MatMulInteger")
FLOAT_MATMULS = ("MatMul", "FusedMatMul", "Gemm")


@dataclasses.dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    sample: tuple[int, ...]  # one input's shape without the batch dimension
    tokens: bool


def _hf(kind: str, **config: Any) -> Callable[[], nn.Module]:
    """A 2-layer Hugging Face encoder of the given width, random init (vocabulary: the zoo's 128 ids)."""

    def make() -> nn.Module:
        prepare_torchvision()
        transformers: Any = importlib.import_module("transformers")  # untyped: the configs differ per model
        torch.manual_seed(0)
        if kind == "bert":
            model: nn.Module = transformers.BertForSequenceClassification(
                transformers.BertConfig(vocab_size=VOCAB, num_hidden_layers=2, num_labels=10, **config)
            )
        elif kind == "distilbert":
            model = transformers.DistilBertForSequenceClassification(
                transformers.DistilBertConfig(vocab_size=VOCAB, n_layers=2, num_labels=10, **config)
            )
        else:
            model = transformers.ViTForImageClassification(
                transformers.ViTConfig(num_hidden_layers=2, num_labels=10, **config)
            )
        return _Logits(model.eval(), "pixel_values" if kind == "vit" else "input_ids").eval()

    return make


def _random_head(model: nn.Module) -> nn.Module:
    """torchvision's ViT starts its classifier at zero: every output is 0 and parity would compare zeros."""
    head = cast(nn.Linear, model.get_submodule("heads.head"))
    nn.init.normal_(head.weight, std=0.02)
    return model


def _tv_vit(**config: Any) -> Callable[[], nn.Module]:
    """A torchvision VisionTransformer (nn.MultiheadAttention inside), random init."""

    def make() -> nn.Module:
        torchvision = import_torchvision()
        torch.manual_seed(0)
        return _random_head(torchvision.models.VisionTransformer(num_classes=10, **config).eval())

    return make


CASES: dict[str, Case] = {
    # the zoo's configurations (32 wide)
    "bert": Case(lambda: build("bert"), (SEQ,), True),
    "distilbert": Case(lambda: build("distilbert"), (SEQ,), True),
    "hf_vit": Case(lambda: build("hf_vit"), tuple(ZOO["hf_vit"].input_shape[1:]), False),
    "vit_tiny": Case(  # nn.MultiheadAttention
        lambda: _random_head(build("vit_tiny")), tuple(ZOO["vit_tiny"].input_shape[1:]), False
    ),
    # the width the issue measured BERT at (2 layers, 128 wide)
    "bert_l2_h128": Case(_hf("bert", hidden_size=128, num_attention_heads=2, intermediate_size=512), (SEQ,), True),
    "distilbert_l2_h128": Case(_hf("distilbert", dim=128, n_heads=2, hidden_dim=512), (SEQ,), True),
    # realistic widths, 2 layers
    "bert_l2_h256": Case(_hf("bert", hidden_size=256, num_attention_heads=4, intermediate_size=1024), (SEQ,), True),
    "bert_l2_h384": Case(_hf("bert", hidden_size=384, num_attention_heads=6, intermediate_size=1536), (SEQ,), True),
    "bert_l2_h768": Case(_hf("bert", hidden_size=768, num_attention_heads=12, intermediate_size=3072), (SEQ,), True),
    "distilbert_l2_h768": Case(_hf("distilbert", dim=768, n_heads=12, hidden_dim=3072), (SEQ,), True),
    "vit_l2_h192": Case(
        _hf("vit", image_size=224, patch_size=16, hidden_size=192, num_attention_heads=3, intermediate_size=768),
        (3, 224, 224),
        False,
    ),
    "tv_vit_l2_h192": Case(
        _tv_vit(image_size=224, patch_size=16, num_layers=2, num_heads=3, hidden_dim=192, mlp_dim=768),
        (3, 224, 224),
        False,
    ),  # torchvision's ViT at vit_l2_h192's width: nn.MultiheadAttention instead of Hugging Face's Linears
}


def make_input(case: Case, batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if case.tokens:
        return torch.randint(0, VOCAB, (batch, *case.sample), generator=generator)
    return torch.rand((batch, *case.sample), generator=generator)


def tensor_bytes(path: Path) -> int:
    """Bytes of the file's constant tensors (initializers and Constant nodes), without the graph around them:
    at the zoo's 32-wide configs the graph (node and tensor names, shapes) is a tenth of the FP32 file."""
    graph = onnx.load(str(path)).graph
    tensors = list(graph.initializer) + [
        a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.type == onnx.AttributeProto.TENSOR
    ]
    return sum(numpy_helper.to_array(t).nbytes for t in tensors)


def optimized_ops(path: Path, tmp: Path) -> Counter[str]:
    """Op types of onnxruntime's optimized graph (what it runs after its QDQ fusions)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp / f"{path.stem}.optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def profile(path: Path, feed: dict[str, np.ndarray], threads: int, runs: int, tmp: Path) -> dict[str, float]:
    """Microseconds per run by op type, from onnxruntime's profiler: each node's median over `runs` calls
    (the machine is shared: a mean would carry every preemption), summed by op type, largest first."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp / path.stem)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[str, list[float]] = {}
    op_of: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_node.setdefault(e["name"], []).append(e["dur"])
            op_of[e["name"]] = e["args"]["op_name"]
    per_op: Counter[str] = Counter()
    for node, durations in per_node.items():
        per_op[op_of[node]] += statistics.median(durations)
    top = {op: round(us, 1) for op, us in per_op.most_common(10)}
    return {**top, "total": round(sum(per_op.values()), 1), "nodes": len(per_node)}


def bench_case(name: str, batches: list[int], rounds: int, seconds: float, threads: int, ptq: bool) -> dict:
    started = time.perf_counter()
    case = CASES[name]
    model = case.build()
    calibration = [make_input(case, 8, seed=10 + i) for i in range(4)]
    held_out = make_input(case, 8, seed=999)
    report: dict[str, Any] = {"input": list(case.sample)}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        from squeezer import export_onnx

        paths = {"fp32": export_onnx(model, tmp / "fp32.onnx", (held_out[:1],), verify_inputs=((held_out,), {}))}
        notes: list[str] = []
        paths["squeezer"] = squeezer_int8(model, calibration, tmp / "squeezer.onnx", notes)
        paths["sq_onnxruntime"] = squeezer_int8(
            model, calibration, tmp / "sq_onnxruntime.onnx", notes, sample="int8_onnxruntime"
        )
        if notes:
            report["notes"] = notes
        if ptq:
            paths["ort_ptq"] = ort_ptq(paths["fp32"], calibration, tmp / "ort_ptq.onnx")
        variants = [k for k in paths if k != "fp32"]
        sizes = {k: p.stat().st_size for k, p in paths.items()}
        report["bytes"] = sizes
        report["size_ratio"] = {k: round(sizes[k] / sizes["fp32"], 3) for k in variants}
        payload = {k: tensor_bytes(p) for k, p in paths.items()}
        report["tensor_bytes"] = payload  # the file without its graph: what the weights and constants take
        report["tensor_ratio"] = {k: round(payload[k] / payload["fp32"], 3) for k in variants}
        report["fused"] = {}
        for variant in ("squeezer", "sq_onnxruntime"):
            fused = optimized_ops(paths[variant], tmp)
            report["fused"][variant] = {op: fused[op] for op in (*INTEGER_MATMULS, *FLOAT_MATMULS) if fused[op]}
        feed_name = input_names(paths["fp32"])[0]
        runners = {k: load_runner(p, "onnxruntime", threads) for k, p in paths.items()}
        outs = {k: first_output(run({feed_name: held_out.numpy()})) for k, run in runners.items()}
        scale = max(float(np.abs(outs["fp32"]).max()), 1e-4)
        report["parity"] = {k: round(float(np.abs(outs[k] - outs["fp32"]).max()) / scale, 4) for k in variants}
        report["latency"] = {}
        for batch in batches:
            feed = {feed_name: held_out[:batch].numpy()}
            report["latency"][str(batch)] = side_by_side(runners, feed, rounds, seconds)
        del runners
        feed1 = {feed_name: held_out[:1].numpy()}
        profiled = ("fp32", "squeezer", "sq_onnxruntime")
        report["profile_us"] = {k: profile(paths[k], feed1, threads, 30, tmp) for k in profiled}
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def print_table(results: dict[str, Any]) -> None:
    """x: FP32 ms / variant ms (> 1: faster); nncf: int8.json (NNCF's placement), ort: int8_onnxruntime.json."""
    nan = float("nan")
    head = f"{'model':20} {'b':>2} | {'fp32 ms':>8} {'nncf x':>6} {'ort x':>6} {'ptq x':>6} | "
    head += f"{'size nncf':>9} {'ort':>6} {'ptq':>6} {'tensors ort':>11} | {'parity nncf':>11} {'ort':>7} {'ptq':>7} | "
    head += "int / float matmuls (ort)"
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        if "error" in r:
            print(f"{name:20} error: {r['error'][:120]}")
            continue
        fused = r["fused"].get("sq_onnxruntime", {})
        integer = sum(fused.get(op, 0) for op in INTEGER_MATMULS)
        floating = sum(fused.get(op, 0) for op in FLOAT_MATMULS)
        size, parity = r["size_ratio"], r["parity"]
        for batch, lat in r["latency"].items():
            x = lat["speedup"]
            print(
                f"{name:20} {batch:>2} | {lat['ms']['fp32']:8.2f} {x['squeezer']:6.2f} {x['sq_onnxruntime']:6.2f} "
                f"{x.get('ort_ptq', nan):6.2f} | {size['squeezer']:9.3f} {size['sq_onnxruntime']:6.3f} "
                f"{size.get('ort_ptq', nan):6.3f} {r.get('tensor_ratio', {}).get('sq_onnxruntime', nan):11.3f} | "
                f"{parity['squeezer']:11.4f} {parity['sq_onnxruntime']:7.4f} "
                f"{parity.get('ort_ptq', nan):7.4f} | {integer} / {floating}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="timing per variant per round")
    parser.add_argument("--no-ptq", action="store_true", help="skip onnxruntime's quantize_static yardstick")
    parser.add_argument("--out", type=Path, default=RESULTS / "transformers.json")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in CASES]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(CASES)}")
    batches = [int(b) for b in args.batch.split(",")]
    torch.set_num_threads(args.threads)
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    results: dict[str, Any] = saved.get("models", {})
    done: dict[str, Any] = {}
    for name in models:
        print(f"-- {name}", flush=True)
        try:
            done[name] = bench_case(name, batches, args.rounds, args.seconds, args.threads, not args.no_ptq)
        except Exception as exc:  # one model's failure is reported, the others still run
            done[name] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
        results[name] = done[name]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"machine": machine(), "threads": args.threads, "rounds": args.rounds, "seq": SEQ}
        args.out.write_text(json.dumps({**meta, "models": results}, indent=1))
        print_table({name: done[name]})
    print()
    print_table(done)


if __name__ == "__main__":
    main()
