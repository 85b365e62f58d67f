"""The service's cost: one compression job run in-process by the library (`run_job`, what a worker calls)
vs the same job through `squeezer serve` and the SDK (upload, queue, worker, download), side by side;
then the API under load: 50 concurrent clients polling a job's status while the job runs.
Prints tables and writes bench/results/service.json.

    python bench/bench_service.py [--epochs 12] [--repeat 2] [--clients 50] [--load-seconds 20] [--broker both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from service_common import free_port

from squeezer.client import Client, wait_ready
from squeezer.client.packaging import export_model
from squeezer.examples.digits import digits_loaders, digits_split, train_epoch
from squeezer.examples.models import ResidualCNN
from squeezer.recipe import Recipe
from squeezer.worker.runner import run_job

RESULTS = Path(__file__).parent / "results"
CONFIG = {
    "input_info": {"sample_size": [1, 1, 32, 32]},
    "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 256}}},
}


def job_files(folder: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    train, _ = digits_loaders(image_size=32)
    model = ResidualCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        train_epoch(model, train, optimizer)
    files = {"model": folder / "model.pt2", "train": folder / "train.npz", "val": folder / "val.npz"}
    export_model(model, torch.rand(2, 1, 32, 32), files["model"])
    (x_train, y_train), (x_val, y_val) = digits_split(image_size=32)
    np.savez(files["train"], x=x_train.numpy(), y=y_train.numpy())
    np.savez(files["val"], x=x_val.numpy(), y=y_val.numpy())
    return files


def in_process(files: dict[str, Path], recipe: Recipe, workdir: Path) -> float:
    start = time.perf_counter()
    result = run_job(files["model"], CONFIG, files["train"], files["val"], recipe, workdir)
    assert result.status == "succeeded"
    return time.perf_counter() - start


class Service:
    """`squeezer serve` in a subprocess (embedded defaults, or a Redis broker)."""

    def __init__(self, home: Path, broker_url: str | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "SQUEEZER_HOME": str(home), "SQUEEZER_RATE_LIMIT": "1000000/minute"}  # raw capacity
        if broker_url:
            env["SQUEEZER_BROKER_URL"] = broker_url
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.log = (home / "serve.log").open("w")
        cmd = [sys.executable, "-m", "squeezer.cli", "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_ready(self.url)
        time.sleep(3)  # let the worker process finish importing torch and connect to the broker
        self.key = (home / "api_key").read_text().strip()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


def through_service(service: Service, files: dict[str, Path], recipe: Recipe, out: Path) -> tuple[float, dict]:
    """Wall time from the first upload to the downloaded ONNX, and where the time went."""
    with Client(service.url, service.key) as client:
        start = time.perf_counter()
        ids = {
            name: client.artifacts.upload(path, "model" if name == "model" else "dataset")
            for name, path in files.items()
        }
        job = client.jobs.create("bench", ids["model"], CONFIG, ids["train"], ids["val"], recipe)
        submitted = time.perf_counter()
        job = client.jobs.wait(job)
        finished = time.perf_counter()
        client.jobs.download(job, "onnx", out / f"{job.id}.onnx")
        end = time.perf_counter()
    assert job.status == "succeeded", job.error
    run_s = (job.finished_at - job.started_at).total_seconds()
    return end - start, {
        "upload_submit_s": submitted - start,
        "queue_wait_s": (job.started_at - job.created_at).total_seconds(),
        "worker_run_s": run_s,
        "wait_after_finish_s": max(
            0.0, (finished - submitted) - run_s - (job.started_at - job.created_at).total_seconds()
        ),
        "download_s": end - finished,
    }


async def _poll(url: str, key: str, job_id: str, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits) as http:

        async def one_client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                try:
                    response = await http.get(f"/v1/jobs/{job_id}", timeout=30)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "errors": errors,
        "polls_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
    }


def _ms(text: str) -> float:
    value = float(re.sub(r"[a-z]+$", "", text))
    return round(value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[re.sub(r"^[0-9.]+", "", text)], 1)


def _wrk(url: str, key: str, job_id: str, clients: int, seconds: float) -> dict:
    """wrk (C) drives the load, so the load generator does not take the CPU the API needs."""
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{int(seconds)}s", "--latency", "-H", f"Authorization: Bearer {key}"]
    out = subprocess.run([*cmd, f"{url}/v1/jobs/{job_id}"], capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {
        "generator": "wrk",
        "clients": clients,
        "seconds": seconds,
        "requests": total,
        "errors": errors,
        "polls_per_s": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),
        "p50_ms": _ms(re.search(r"50%\s+(\S+)", out).group(1)),
        "p99_ms": _ms(re.search(r"99%\s+(\S+)", out).group(1)),
    }


def load(service: Service, files: dict[str, Path], clients: int, seconds: float) -> dict:
    """Polls per second and latency while a (long) job runs; the job is cancelled afterwards."""
    with Client(service.url, service.key) as client:
        ids = {n: client.artifacts.upload(p, "model" if n == "model" else "dataset") for n, p in files.items()}
        job = client.jobs.create("load", ids["model"], CONFIG, ids["train"], ids["val"], Recipe(epochs=1000))
        while client.jobs.get(job).status == "queued":
            time.sleep(0.2)
        if shutil.which("wrk"):
            result = _wrk(service.url, service.key, job.id, clients, seconds)
        else:
            result = {"generator": "httpx", **asyncio.run(_poll(service.url, service.key, job.id, clients, seconds))}
        progressed = client.jobs.get(job).epoch
        client.jobs.cancel(job)
        client.jobs.wait(job, timeout=300)
    return {**result, "job_epochs_during_load": progressed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12, help="QAT epochs of the timed job (12: about a minute here)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument("--broker", choices=["embedded", "redis", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=2, help="jobs per broker (run 1 meets a cold worker)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="squeezer-bench-"))
    files = job_files(root)
    recipe = Recipe(epochs=args.epochs, lr=1e-4)

    brokers = ["embedded", "redis"] if args.broker == "both" else [args.broker]
    redis = None
    if "redis" in brokers:
        if shutil.which("redis-server") is None:
            raise SystemExit("redis-server is not installed (make system-deps), or pass --broker embedded")
        redis_port = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
    rows = []
    try:
        for broker in brokers:
            broker_url = f"redis://127.0.0.1:{redis_port}/0" if broker == "redis" else None
            service = Service(root / f"service-{broker}", broker_url)
            try:
                runs = []
                for attempt in range(args.repeat):  # the first job of a fresh worker pays its imports and warm-up
                    library_s = in_process(files, recipe, root / f"inprocess-{broker}-{attempt}")
                    service_s, parts = through_service(service, files, recipe, root)
                    runs.append(
                        {
                            "library_s": round(library_s, 2),
                            "service_s": round(service_s, 2),
                            "ratio": round(service_s / library_s, 3),
                            "parts_s": {k: round(v, 2) for k, v in parts.items()},
                        }
                    )
                polls = load(service, files, args.clients, args.load_seconds)
            finally:
                service.close()
            rows.append({"broker": broker, "epochs": args.epochs, "runs": runs, "load": polls})
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait()
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nService overhead: one INT8 QAT job ({args.epochs} epochs, ResidualCNN on digits)")
    print(f"{'broker':<10} {'run':>4} {'library s':>10} {'service s':>10} {'ratio':>7}  where the service's time went")
    for r in rows:
        for i, run in enumerate(r["runs"], 1):
            parts = ", ".join(f"{k} {v}" for k, v in run["parts_s"].items())
            print(f"{r['broker']:<10} {i:>4} {run['library_s']:>10} {run['service_s']:>10} {run['ratio']:>7}  {parts}")
    generator = rows[0]["load"]["generator"] if rows else "?"
    print(f"\nAPI under load: {args.clients} clients ({generator}) polling GET /v1/jobs/{{id}} while a job trains")
    print(f"{'broker':<10} {'polls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>7} {'job epochs meanwhile':>21}")
    for r in rows:
        lo = r["load"]
        print(
            f"{r['broker']:<10} {lo['polls_per_s']:>8} {lo['p50_ms']:>7} {lo['p99_ms']:>7} {lo['errors']:>7} "
            f"{lo['job_epochs_during_load']:>21}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "rows": rows,
    }
    (RESULTS / "service.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {RESULTS / 'service.json'}")


if __name__ == "__main__":
    main()
