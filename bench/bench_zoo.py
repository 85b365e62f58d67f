"""The model zoo matrix: widely used torchvision, timm and Hugging Face architectures (random init, small
inputs) x compression configs (INT8 QAT, magnitude sparsity, filter pruning, INT8 + distillation) x the
two ways in (the library on the eager model; the service's `.pt2` -> safe load -> lift). Each cell
compresses, trains two steps, exports to ONNX and checks onnxruntime against the compressed model; a
failing cell reports the step and the exact reason.

Each case runs in its own process with a time limit, `--jobs` at a time. Prints a table and writes
bench/results/zoo.json (merged with earlier runs, so a subset can be refreshed).

    python bench/bench_zoo.py                       # everything (make zoo), about an hour on 2 cores
    python bench/bench_zoo.py --models resnet18 bert --algorithms int8 --paths service
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from squeezer.examples.zoo import ZOO
from squeezer.examples.zoo_check import ALGORITHMS, PATHS

RESULTS = Path(__file__).parent / "results"


def run_one(model: str, algorithm: str, path: str, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "squeezer.examples.zoo_check", model, algorithm, path, tmp, str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return _failed(model, algorithm, path, "timeout", f"over the {timeout:.0f} s limit", start)
        if out.exists():
            return json.loads(out.read_text())
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return _failed(model, algorithm, path, "crash", tail[0][:300], start)


def _failed(model: str, algorithm: str, path: str, stage: str, reason: str, start: float) -> dict[str, Any]:
    seconds = round(time.perf_counter() - start, 2)
    return {
        "model": model,
        "algorithm": algorithm,
        "path": path,
        "ok": False,
        "stage": stage,
        "reason": reason,
        "seconds": seconds,
        "parity": None,
        "size_ratio": None,
        "details": {},
    }


def table(results: list[dict[str, Any]], algorithms: list[str], paths: list[str]) -> str:
    """Markdown: one row per model, one column per algorithm x path; a cell is `ok` or the failing step."""
    cells = {(r["model"], r["algorithm"], r["path"]): r for r in results}
    columns = [(a, p) for a in algorithms for p in paths]
    lines = ["| model | family | " + " | ".join(f"{a} ({p})" for a, p in columns) + " |"]
    lines.append("|---|---|" + "---|" * len(columns))
    for model in sorted({r["model"] for r in results}, key=list(ZOO).index):
        row = []
        for a, p in columns:
            r = cells.get((model, a, p))
            row.append("" if r is None else ("ok" if r["ok"] else f"**{r['stage']}**"))
        lines.append(f"| {model} | {ZOO[model].family} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(ZOO))
    parser.add_argument("--algorithms", nargs="*", default=list(ALGORITHMS))
    parser.add_argument("--paths", nargs="*", default=list(PATHS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "zoo.json")
    args = parser.parse_args()
    cases = [(m, a, p) for m in args.models for a in args.algorithms for p in args.paths]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda case: run_one(*case, args.timeout), cases))
    previous = json.loads(args.out.read_text())["results"] if args.out.exists() else []
    fresh = {(r["model"], r["algorithm"], r["path"]) for r in results}
    merged = [r for r in previous if (r["model"], r["algorithm"], r["path"]) not in fresh] + results
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    args.out.write_text(json.dumps({"machine": machine, "results": merged}, indent=1))
    print(table(merged, list(ALGORITHMS), list(PATHS)))
    failures = [r for r in merged if not r["ok"]]
    print(f"\n{len(merged) - len(failures)} of {len(merged)} cells pass")
    for r in failures:
        print(f"- {r['model']} / {r['algorithm']} / {r['path']}: {r['stage']}: {r['reason']}")


if __name__ == "__main__":
    main()
