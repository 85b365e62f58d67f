"""Load on loopback: 200 small jobs submitted concurrently by 20 clients to `squeezer serve` with two
workers on a Redis broker. Checks that every job finished exactly once (none lost, none duplicated, no
gap or repeat in any metric history) and reports the status-poll latency under that load.
Prints a table and writes bench/results/load.json.

    python bench/bench_load.py [--jobs 200] [--clients 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from service_common import free_port

from squeezer.client import Client, wait_ready
from squeezer.client.packaging import export_model
from squeezer.examples.digits import digits_split
from squeezer.examples.models import MLP

RESULTS = Path(__file__).parent / "results"
CONFIG = {"compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 64}}}}
RECIPE = {"epochs": 1, "batch_size": 32}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (make system-deps)")
    root = Path(tempfile.mkdtemp(prefix="squeezer-load-"))
    torch.manual_seed(0)
    export_model(MLP(hidden=16), torch.rand(2, 64), root / "model.pt2")
    (x_train, y_train), (x_val, y_val) = digits_split(image_size=None)
    np.savez(root / "train.npz", x=x_train[:256].numpy(), y=y_train[:256].numpy())
    np.savez(root / "val.npz", x=x_val[:128].numpy(), y=y_val[:128].numpy())

    redis_port, api_port = free_port(), free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""], stdout=subprocess.DEVNULL
    )
    env = {
        **os.environ,
        "SQUEEZER_HOME": str(root / "home"),
        "SQUEEZER_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SQUEEZER_RATE_LIMIT": "1000000/minute",
        "SQUEEZER_MAX_ACTIVE_JOBS_PER_KEY": str(args.jobs),
    }
    (root / "home").mkdir()
    log = (root / "home" / "serve.log").open("w")
    cli = [sys.executable, "-m", "squeezer.cli"]
    serve = subprocess.Popen([*cli, "serve", "--port", str(api_port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    second = subprocess.Popen([*cli, "worker", "--nice", "10"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{api_port}"
    try:
        wait_ready(url)
        key = (root / "home" / "api_key").read_text().strip()
        with Client(url, key) as client:
            ids = {
                "model": client.artifacts.upload(root / "model.pt2", "model").id,
                "train": client.artifacts.upload(root / "train.npz", "dataset").id,
                "val": client.artifacts.upload(root / "val.npz", "dataset").id,
            }
        submit_ms: list[float] = []
        poll_ms: list[float] = []
        job_ids: list[str] = []
        lock = threading.Lock()
        per_client = args.jobs // args.clients

        def one_client(n: int) -> None:
            with Client(url, key) as client:
                mine = []
                for i in range(per_client):
                    t = time.perf_counter()
                    job = client.jobs.create(f"load-{n}-{i}", ids["model"], CONFIG, ids["train"], ids["val"], RECIPE)
                    with lock:
                        submit_ms.append(1000 * (time.perf_counter() - t))
                    mine.append(job.id)
                with lock:
                    job_ids.extend(mine)
                pending = set(mine)
                while pending:  # poll each unfinished job about once a second, as a client would
                    for job_id in list(pending):
                        t = time.perf_counter()
                        status = client.jobs.get(job_id).status
                        with lock:
                            poll_ms.append(1000 * (time.perf_counter() - t))
                        if status in ("succeeded", "failed", "cancelled"):
                            pending.discard(job_id)
                    time.sleep(1.0)

        start = time.perf_counter()
        threads = [threading.Thread(target=one_client, args=(n,)) for n in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start

        with Client(url, key) as client:
            statuses, attempts, histories = {}, {}, {}
            for job_id in job_ids:
                job = client.jobs.get(job_id)
                statuses[job_id] = job.status
                histories[job_id] = [m.epoch for m in client.jobs.metrics(job_id)]
            listed = client.jobs.list(limit=500).total
        import sqlite3

        with sqlite3.connect(root / "home" / "squeezer.db") as db:
            attempts = dict(db.execute("SELECT id, attempts FROM job").fetchall())
            workers = db.execute("SELECT COUNT(DISTINCT worker_id) FROM job").fetchone()[0]
    finally:
        for process in (second, serve, redis):
            process.terminate()
            process.wait(timeout=60)
        log.close()

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(ordered[int(q * (len(ordered) - 1))], 1)

    result = {
        "jobs": len(job_ids),
        "clients": args.clients,
        "workers": workers,
        "listed_by_api": listed,
        "succeeded": sum(s == "succeeded" for s in statuses.values()),
        "ran_more_than_once": sum(a != 1 for a in attempts.values()),
        "histories_not_0_1": sum(h != [0, 1] for h in histories.values()),
        "wall_s": round(wall, 1),
        "jobs_per_min": round(60 * len(job_ids) / wall, 1),
        "submit_p50_ms": round(statistics.median(submit_ms), 1),
        "submit_p99_ms": pct(submit_ms, 0.99),
        "polls": len(poll_ms),
        "poll_p50_ms": round(statistics.median(poll_ms), 1),
        "poll_p99_ms": pct(poll_ms, 0.99),
    }
    print(f"\n{args.jobs} jobs from {args.clients} clients, 2 workers, Redis broker, SQLite database")
    for key_, value in result.items():
        print(f"  {key_:<22} {value}")
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}, "result": result}
    (RESULTS / "load.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / 'load.json'}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
