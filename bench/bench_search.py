"""Search benchmark: a search on `squeezer serve --workers 2` against the job a user would submit by hand.

The model is the digits ResidualCNN trained as in `make demo` (sklearn's bundled `load_digits`, 32x32).
Two searches with the same candidates and accuracy budget run one after the other on the same service:
- `search`: successive halving on (the default);
- `exhaustive`: every candidate runs to the end of its loop (`early_stopping=false`).
For each: every candidate (status, epochs, metric, within budget, onnxruntime latency at `--batch-size`
as the worker measured it, size), the Pareto front, the recommendation, wall time, epochs spent, and the
sum of the candidates' own wall times (what running them one after another would take).

Then the recommended model and the `int8` candidate (INT8 QAT with Early Exit: what a user submits by
hand) are downloaded and timed side by side in onnxruntime, alternating calls, on this machine.

    python bench/bench_search.py [--budget 0.5] [--epochs 18] [--batch-size 8] [--candidates int8,pruning50_int8,...]
Writes bench/results/search.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from squeezer.client import Client, SearchRead, wait_ready
from squeezer.examples.digits import digits_split, trained_demo_cnn
from squeezer.runtime.compare import measure
from squeezer.search import DEFAULT_CANDIDATES

RESULTS = Path(__file__).parent / "results" / "search.json"


def input_name(path: Path) -> str:
    import onnx

    return str(onnx.load(str(path), load_external_data=False).graph.input[0].name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary(search: SearchRead) -> dict[str, Any]:
    result = search.result
    return {
        "status": search.status,
        "wall_time_s": result.wall_time_s,
        "epochs_spent": result.epochs_spent,
        "sequential_wall_time_s": sum(c.wall_time_s or 0.0 for c in result.candidates),
        "front": result.front,
        "recommended": result.recommended,
        "metric_floor": result.metric_floor,
        "fp32_metric": result.fp32_metric,
        "candidates": [c.model_dump() | {"speedup": c.speedup} for c in result.candidates],
    }


def print_search(label: str, s: dict[str, Any]) -> None:
    print(
        f"\n{label}: {s['status']}, {s['wall_time_s']:.0f} s wall ({s['sequential_wall_time_s']:.0f} s of candidate "
        f"time), {s['epochs_spent']} epochs; FP32 {s['fp32_metric']:.2f}%, floor {s['metric_floor']:.2f}%"
    )
    print(
        f"{'candidate':<20} {'status':<10} {'ep':>3} {'metric':>7} {'in':>4} "
        f"{'ort ms':>7} {'vs fp32':>8} {'KiB':>6} front"
    )
    for c in s["candidates"]:
        mark = "*" if c["name"] == s["recommended"] else ("o" if c["on_front"] else "")
        print(
            f"{c['name']:<20} {c['status']:<10} {c['epochs']:>3} "
            f"{(c['metric'] or float('nan')):>7.2f} {('yes' if c['within_budget'] else 'no'):>4} "
            f"{(c['latency_ms'] or float('nan')):>7.3f} {(c['speedup'] or float('nan')):>7.2f}x "
            f"{(c['size_bytes'] or 0) / 1024:>6.0f} {mark}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=0.5, help="allowed accuracy drop, points")
    parser.add_argument("--epochs", type=int, default=18, help="max_total_epochs of each search")
    parser.add_argument("--candidates", default=",".join(DEFAULT_CANDIDATES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="batch size latency is measured at")
    parser.add_argument("--skip-exhaustive", action="store_true")
    args = parser.parse_args()
    candidates = args.candidates.split(",")
    logging.getLogger("squeezer.runtime.compare").setLevel(logging.ERROR)  # its "not faster than FP32" means int8 here
    model, fp32 = trained_demo_cnn()
    print(f"digits ResidualCNN: FP32 accuracy {fp32:.2f}%; {len(candidates)} candidates, budget {args.budget} points")
    train_xy, val_xy = digits_split(image_size=32)
    with tempfile.TemporaryDirectory(prefix="squeezer-bench-search-") as tmp:
        home, port = Path(tmp) / "home", free_port()
        env = {**os.environ, "SQUEEZER_HOME": str(home)}
        log = (Path(tmp) / "serve.log").open("w")
        server = subprocess.Popen(
            [sys.executable, "-m", "squeezer.cli", "serve", "--port", str(port), "--workers", str(args.workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        report: dict[str, Any] = {}
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, alive=lambda: server.poll() is None)
            os.environ["SQUEEZER_HOME"] = str(home)
            with Client(url) as client:
                runs = [("search", True)] + ([] if args.skip_exhaustive else [("exhaustive", False)])
                searched: dict[str, SearchRead] = {}
                for label, early in runs:
                    started = time.monotonic()
                    search = client.search(
                        model,
                        torch.rand(1, 1, 32, 32),
                        train_xy,
                        val_xy,
                        {"lr": 1e-3},
                        budget=args.budget,
                        candidates=candidates,
                        max_total_epochs=args.epochs,
                        early_stopping=early,
                        batch_size=args.batch_size,
                        name=label,
                    )
                    done = searched[label] = client.searches.wait(search)
                    report[label] = summary(done) | {"client_wall_time_s": time.monotonic() - started}
                    print_search(label, report[label])
                result = searched["search"].result
                chosen = result.best
                by_hand = result.candidate("int8")
                if chosen is not None and by_hand.status == "succeeded":
                    folder = Path(tmp) / "files"
                    rec = client.jobs.download(chosen.job_id, "onnx", folder / "recommended.onnx")
                    int8 = client.jobs.download(by_hand.job_id, "onnx", folder / "int8.onnx")
                    report["side_by_side"] = {
                        "recommended": chosen.name,
                        "recommended_metric": chosen.metric,
                        "int8_metric": by_hand.metric,
                    }
                    for threads in (1, 2):  # the search's workers timed at 1 thread each
                        os.environ["OMP_NUM_THREADS"] = str(threads)
                        timing, _ = measure(
                            int8,
                            rec,
                            {input_name(rec): torch.rand(args.batch_size, 1, 32, 32).numpy()},
                            runtimes=("onnxruntime",),
                            budget_s=20.0,
                            max_runs=400,
                        )
                        t = timing["onnxruntime"]
                        report["side_by_side"][f"{threads}_threads"] = {
                            "int8_ms": t["fp32_ms"],
                            "recommended_ms": t["compressed_ms"],
                            "speedup_over_int8": t["paired_speedup"],
                            "runs": t["runs"],
                        }
                        print(
                            f"side by side in onnxruntime, batch {args.batch_size}, {threads} thread(s): "
                            f"int8 {t['fp32_ms']:.3f} ms, {chosen.name} {t['compressed_ms']:.3f} ms: "
                            f"{t['paired_speedup']:.2f}x faster (median of {t['runs']} back-to-back pairs)"
                        )
        finally:
            server.terminate()
            server.wait(timeout=120)
            log.close()
    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}
    report["settings"] = {
        "budget": args.budget,
        "epochs": args.epochs,
        "candidates": candidates,
        "workers": args.workers,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
