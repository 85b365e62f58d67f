"""Which op patterns pay off in INT8, per runtime: the data behind latency-aware quantizer placement.

Each pattern is a tiny torch module at a realistic shape (ResNet / MobileNet / EfficientNet stages at
224x224 input, BERT-base blocks at 128 tokens), exported three ways:
- fp32:     `squeezer.export_onnx`;
- squeezer: Squeezer's INT8 export as users get it (sample config `int8.json` defaults, min-max range
            init on random calibration data, no BN adaptation): QDQ where Squeezer places quantizers;
- qdq_all:  onnxruntime's `quantize_static` of the fp32 file with QDQ around every op of the graph that
            it can quantize (per-channel int8 weights, uint8 activations): "what if this op were INT8".
Both INT8 files get a QDQ pair on the pattern's output where it has none (`quantize_outputs`): in a
network the next layer's input quantizer is there, and without it no runtime can keep the op in INT8.
Latency at 2 threads, batch 1 (`--batch`), in onnxruntime and OpenVINO, the variants timed round by
round side by side (see bench_runtime.py). Verdict per runtime from the better of the two INT8 files:
"pays" when >= 1.1x faster than FP32, "does not pay" when slower than 0.95x, otherwise "neutral"; the
median-of-rounds ratio and the fastest-call ratio must agree, else "unclear" (a loaded machine).

    python bench/bench_patterns.py                        # all patterns, about 10 min on 2 cores
    python bench/bench_patterns.py --patterns se_gate,conv_silu
Writes bench/results/patterns.json (merged by pattern with earlier runs).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from bench_runtime import RESULTS, input_names, machine, side_by_side
from torch import nn

from squeezer.examples.ptq_check import ort_ptq
from squeezer.runtime import RUNTIMES, load_runner

PAYS, NOT_PAYS = 1.1, 0.95


def conv_bn(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class ConvAct(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, act: nn.Module | None, groups: int = 1) -> None:
        super().__init__()
        self.conv = conv_bn(cin, cout, k, groups)
        self.act = act or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class SEGate(nn.Module):
    """EfficientNet-B0's squeeze-excitation: avgpool -> conv -> SiLU -> conv -> sigmoid -> mul."""

    def __init__(self, c: int, reduced: int) -> None:
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(c, reduced, 1), nn.Conv2d(reduced, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W)
        gate = torch.sigmoid(self.expand(F.silu(self.reduce(F.adaptive_avg_pool2d(x, 1)))))  # (N, C, 1, 1)
        return x * gate


class Residual(nn.Module):
    """ResNet basic block: conv-bn-relu-conv-bn, + x, relu."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = conv_bn(c, c, 3), conv_bn(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.b(F.relu(self.a(x))) + x)


class Concat(nn.Module):
    """Inception-style branches joined on channels."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = ConvAct(c, c // 2, 1, nn.ReLU()), ConvAct(c, c // 2, 3, nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], dim=1)


class Attention(nn.Module):
    """BERT self-attention written out: q/k/v projections, QK^T/sqrt(d), softmax, @V, output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, D)
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (N, H, T, d)
        scores = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)  # (N, H, T, T)
        return self.out((scores @ v).transpose(1, 2).reshape(n, t, d))


class LinearAct(nn.Module):
    def __init__(self, cin: int, cout: int, act: nn.Module | None = None) -> None:
        super().__init__()
        self.fc, self.act = nn.Linear(cin, cout), act or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class LayerNormAfterLinear(nn.Module):
    """BERT's output sublayer: Linear, + residual, LayerNorm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc, self.norm = nn.Linear(dim, dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc(x) + x)


Pattern = tuple[str, Callable[[], nn.Module], tuple[int, ...]]  # what it is, module, per-sample shape
PATTERNS: dict[str, Pattern] = {
    "conv3x3": ("conv3x3-bn-relu 64->64 @56x56 (ResNet stage 1)", lambda: ConvAct(64, 64, 3, nn.ReLU()), (64, 56, 56)),
    "conv1x1": ("conv1x1-bn-relu 128->512 @28x28 (bottleneck)", lambda: ConvAct(128, 512, 1, nn.ReLU()), (128, 28, 28)),
    "dwconv3x3": (
        "depthwise conv3x3-bn-relu6 144ch @56x56 (MobileNetV2)",
        lambda: ConvAct(144, 144, 3, nn.ReLU6(), groups=144),
        (144, 56, 56),
    ),
    "conv_relu": ("conv1x1-bn-relu 192->192 @28x28", lambda: ConvAct(192, 192, 1, nn.ReLU()), (192, 28, 28)),
    "conv_silu": ("conv1x1-bn-SiLU 192->192 @28x28", lambda: ConvAct(192, 192, 1, nn.SiLU()), (192, 28, 28)),
    "conv_hardswish": (
        "conv1x1-bn-Hardswish 192->192 @28x28",
        lambda: ConvAct(192, 192, 1, nn.Hardswish()),
        (192, 28, 28),
    ),
    "conv_sigmoid": ("conv1x1-bn-Sigmoid 192->192 @28x28", lambda: ConvAct(192, 192, 1, nn.Sigmoid()), (192, 28, 28)),
    "se_gate": ("squeeze-excitation 96ch (reduce 24) @28x28 (EfficientNet)", lambda: SEGate(96, 24), (96, 28, 28)),
    "residual_add": ("ResNet basic block 64ch @56x56 (+ x, relu)", lambda: Residual(64), (64, 56, 56)),
    "concat": ("conv1x1 | conv3x3 branches, concat, 128ch @28x28", lambda: Concat(128), (128, 28, 28)),
    "linear_768": ("Linear 768->768, 128 tokens (BERT-base)", lambda: LinearAct(768, 768), (128, 768)),
    "linear_gelu": (
        "Linear 768->3072 + GELU, 128 tokens (BERT FFN)",
        lambda: LinearAct(768, 3072, nn.GELU()),
        (128, 768),
    ),
    "gelu": ("GELU alone, 128x3072", lambda: nn.GELU(), (128, 3072)),
    "layernorm": ("Linear 768->768 + residual + LayerNorm, 128 tokens", lambda: LayerNormAfterLinear(768), (128, 768)),
    "layernorm_alone": ("LayerNorm alone, 128x768", lambda: nn.LayerNorm(768), (128, 768)),
    "attention": ("self-attention 12 heads, 768 wide, 128 tokens (softmax)", lambda: Attention(768, 12), (128, 768)),
}


def build_pattern(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = PATTERNS[name][1]()
    shape = PATTERNS[name][2]
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):  # statistics as a trained model has them
        model.train()
        with torch.no_grad():
            for seed in range(3):
                model(torch.rand(8, *shape, generator=torch.Generator().manual_seed(50 + seed)))
    return model.eval()


def squeezer_int8(model: nn.Module, shape: tuple[int, ...], calibration: list[torch.Tensor], out: Path) -> Path:
    from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
    from squeezer.compression.config.samples import sample_config_path

    data = dict(NNCFConfig.from_json(sample_config_path("int8")))
    data["input_info"] = {"sample_size": [1, *shape]}
    data["compression"]["initializer"] = {
        "range": {"num_init_samples": sum(len(x) for x in calibration)},
        "batchnorm_adaptation": {"num_bn_adaptation_samples": 0},
    }
    config = NNCFConfig.from_dict(data)
    register_default_init_args(config, [(x, torch.zeros(len(x), dtype=torch.long)) for x in calibration])
    ctrl, _ = create_compressed_model(model, config, dump_graphs=False)
    return ctrl.export_model(out)


def quantize_outputs(path: Path, model: nn.Module, calibration: list[torch.Tensor]) -> Path:
    """QDQ on each graph output not already quantized: in a network the next layer's input quantizer
    sits there, and onnxruntime only runs e.g. QLinearConv when the op's output is quantized too.
    uint8 for a non-negative output, symmetric int8 otherwise (min-max on the calibration data)."""
    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    producers = {out: node for node in graph.node for out in node.output}
    with torch.no_grad():
        y = torch.cat([model(x).flatten() for x in calibration])
    lo, hi = float(y.min()), float(y.max())
    unsigned = lo >= 0
    scale = (hi / 255.0 if unsigned else max(abs(lo), abs(hi)) / 127.0) or 1.0
    dtype = onnx.TensorProto.UINT8 if unsigned else onnx.TensorProto.INT8
    for output in graph.output:
        node = producers.get(output.name)
        if node is None or node.op_type == "DequantizeLinear":
            continue
        raw = f"{output.name}.float"
        node.output[list(node.output).index(output.name)] = raw
        graph.initializer.extend(
            [
                onnx.helper.make_tensor(f"{output.name}.scale", onnx.TensorProto.FLOAT, [], [scale]),
                onnx.helper.make_tensor(f"{output.name}.zero_point", dtype, [], [0]),
            ]
        )
        qparams = [f"{output.name}.scale", f"{output.name}.zero_point"]
        graph.node.extend(
            [
                onnx.helper.make_node("QuantizeLinear", [raw, *qparams], [f"{output.name}.q"]),
                onnx.helper.make_node("DequantizeLinear", [f"{output.name}.q", *qparams], [output.name]),
            ]
        )
    onnx.save(graph_model, str(path))
    return path


def graph_ops(path: Path) -> dict[str, int]:
    return dict(Counter(n.op_type for n in onnx.load(str(path)).graph.node))


def verdict(speedup: float, speedup_best: float) -> str:
    """From the median ratio and the fastest-call ratio; "unclear" when the two disagree (noise)."""
    verdicts = {"pays" if s >= PAYS else "does not pay" if s < NOT_PAYS else "neutral" for s in (speedup, speedup_best)}
    return verdicts.pop() if len(verdicts) == 1 else "unclear"


def bench_pattern(name: str, batch: int, rounds: int, seconds: float, threads: int) -> dict[str, Any]:
    from squeezer import export_onnx

    what, _, shape = PATTERNS[name]
    model = build_pattern(name)
    calibration = [torch.rand(4, *shape, generator=torch.Generator().manual_seed(10 + i)) for i in range(2)]
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(999))
    report: dict[str, Any] = {"pattern": what, "input": [batch, *shape]}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": export_onnx(model, Path(tmp) / "fp32.onnx", (x[:1],), verify_inputs=((x,), {}))}
        paths["squeezer"] = squeezer_int8(model, shape, calibration, Path(tmp) / "squeezer.onnx")
        every_op = sorted(set(graph_ops(paths["fp32"])))
        paths["qdq_all"] = ort_ptq(paths["fp32"], calibration, Path(tmp) / "qdq_all.onnx", op_types=every_op)
        for k in ("squeezer", "qdq_all"):
            quantize_outputs(paths[k], model, calibration)
        ops = {k: graph_ops(p) for k, p in paths.items()}
        report["fp32_ops"] = ops["fp32"]
        report["quantize_linear"] = {k: ops[k].get("QuantizeLinear", 0) for k in ("squeezer", "qdq_all")}
        feed = {input_names(paths["fp32"])[0]: x.numpy()}
        report["latency"] = {}
        for runtime in RUNTIMES:
            runners = {k: load_runner(p, runtime, threads) for k, p in paths.items()}
            timing = side_by_side(runners, feed, rounds, seconds)
            pick = max(timing["speedup"], key=timing["speedup"].__getitem__)  # the better INT8 file
            timing["verdict"] = verdict(timing["speedup"][pick], timing["speedup_best"][pick])
            timing["verdict_from"] = pick
            report["latency"][runtime] = timing
            del runners
    return report


def print_table(results: dict[str, Any]) -> None:
    """Speedups over FP32 as median-ratio/fastest-call-ratio; QL: activation QuantizeLinear nodes."""
    head = (
        f"{'pattern':15} {'QL sq/all':>9} | {'ORT fp32 ms':>11} {'squeezer x':>11} {'qdq_all x':>11} {'verdict':>12} | "
        f"{'OV fp32 ms':>10} {'squeezer x':>11} {'qdq_all x':>11} {'verdict':>12}"
    )
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        if "error" in r:
            print(f"{name:15} error: {r['error'][:120]}")
            continue
        q = r["quantize_linear"]
        cells = []
        for runtime in RUNTIMES:
            t = r["latency"][runtime]
            ratios = [f"{t['speedup'][k]:.2f}/{t['speedup_best'][k]:.2f}" for k in ("squeezer", "qdq_all")]
            cells.append(f"{t['ms']['fp32']:11.3f} {ratios[0]:>11} {ratios[1]:>11} {t['verdict']:>12}")
        print(f"{name:15} {q['squeezer']:>4}/{q['qdq_all']:<4} | {cells[0]} | {cells[1]}")


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per pattern: FP32 ms, speedups (median-of-rounds and fastest-call), verdict per runtime."""
    rows = []
    for name, r in results.items():
        if "error" in r:
            rows.append({"pattern": name, "error": r["error"]})
            continue
        row: dict[str, Any] = {"pattern": name, "what": r["pattern"]}
        for runtime, short in zip(RUNTIMES, ("ort", "ov"), strict=True):
            t = r["latency"][runtime]
            row[f"{short}_fp32_ms"] = t["ms"]["fp32"]
            for k in ("squeezer", "qdq_all"):
                row[f"{short}_{k}_x"] = t["speedup"][k]
                row[f"{short}_{k}_x_best"] = t["speedup_best"][k]
            row[f"{short}_verdict"] = t["verdict"]  # the better INT8 file: does INT8 here pay at all
            row[f"{short}_squeezer_verdict"] = verdict(t["speedup"]["squeezer"], t["speedup_best"]["squeezer"])
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patterns", default=",".join(PATTERNS), help="comma-separated pattern names")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.4, help="timing per variant per round")
    parser.add_argument("--out", type=Path, default=RESULTS / "patterns.json")
    parser.add_argument("--table-only", action="store_true", help="print and re-summarize --out, measure nothing")
    args = parser.parse_args()
    if args.table_only:
        saved = json.loads(args.out.read_text())
        meta = {k: v for k, v in saved.items() if k not in ("summary", "patterns")}
        rows = summary(saved["patterns"])
        args.out.write_text(json.dumps({**meta, "summary": rows, "patterns": saved["patterns"]}, indent=1))
        print_table(saved["patterns"])
        return
    names = [p.strip() for p in args.patterns.split(",") if p.strip()]
    unknown = [p for p in names if p not in PATTERNS]
    if unknown:
        parser.error(f"unknown patterns {unknown}; choose from {', '.join(PATTERNS)}")
    torch.set_num_threads(args.threads)
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    results: dict[str, Any] = saved.get("patterns", {})
    done: dict[str, Any] = {}
    for name in names:
        print(f"-- {name}", flush=True)
        try:
            done[name] = bench_pattern(name, args.batch, args.rounds, args.seconds, args.threads)
        except Exception as exc:  # one pattern's failure is reported, the others still run
            done[name] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
        results[name] = done[name]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"machine": machine(), "threads": args.threads, "batch": args.batch, "thresholds": [NOT_PAYS, PAYS]}
        args.out.write_text(json.dumps({**meta, "summary": summary(results), "patterns": results}, indent=1))
    print()
    print_table(done)


if __name__ == "__main__":
    main()
