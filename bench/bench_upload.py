"""Status-poll latency while a large dataset uploads: one client polls GET /v1/jobs (the status poll) in a loop,
first with nothing else going on, then while another client uploads a large `.npz` (streamed from disk).
Whatever the upload route does on the event loop (hashing, writing, database work, reading the arrays)
shows up as poll latency. The API runs alone in its own process (uvicorn, the embedded SQLite defaults,
no worker). Prints a table and writes bench/results/upload.json.

    python bench/bench_upload.py [--mib 128] [--idle-s 3]

To measure another revision of the code, run it with PYTHONPATH pointing at that revision's tree.
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

import httpx
import numpy as np
from service_common import free_port

from squeezer.client import wait_ready

RESULTS = Path(__file__).parent / "results"


def _poll(url: str, headers: dict[str, str], stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        while not stop.is_set():
            start = time.perf_counter()
            http.get("/v1/jobs", params={"limit": 1}).raise_for_status()
            out.append((time.perf_counter() - start) * 1000)
            time.sleep(0.01)


def _stats(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "polls": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=128, help="size of the uploaded x array")
    parser.add_argument("--idle-s", type=float, default=3.0, help="seconds of polling before the upload")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="squeezer-upload-"))
    rows = args.mib * (1 << 20) // (1024 * 4)
    big = root / "big.npz"
    np.savez(big, x=np.ones((rows, 1024), np.float32), y=(np.arange(rows) % 10).astype(np.int64))
    env = {
        **os.environ,
        "SQUEEZER_HOME": str(root / "home"),
        "SQUEEZER_RATE_LIMIT": "1000000/minute",
        "SQUEEZER_MAX_UPLOAD_BYTES": str(big.stat().st_size + (1 << 20)),
        "SQUEEZER_MAX_STORAGE_BYTES_PER_KEY": str(4 * big.stat().st_size),
    }
    cli = [sys.executable, "-m", "squeezer.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
    key = subprocess.run([*cli, "keys", "create", "bench"], env=env, check=True, capture_output=True, text=True)
    headers = {"Authorization": f"Bearer {key.stdout.strip()}"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "squeezer.api:create_app", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(url)
        startup_s = time.perf_counter() - started
        stop, idle, during = threading.Event(), [], []
        poller = threading.Thread(target=_poll, args=(url, headers, stop, idle))
        poller.start()
        time.sleep(args.idle_s)
        stop.set()
        poller.join()
        stop.clear()
        poller = threading.Thread(target=_poll, args=(url, headers, stop, during))
        poller.start()
        start = time.perf_counter()
        with big.open("rb") as f, httpx.Client(base_url=url, headers=headers, timeout=600) as http:
            response = http.post("/v1/artifacts", data={"kind": "dataset"}, files={"file": ("big.npz", f)})
        upload_s = time.perf_counter() - start
        stop.set()
        poller.join()
        response.raise_for_status()
    finally:
        api.terminate()
        api.wait()
    result = {
        "upload_mib": round(big.stat().st_size / 2**20, 1),
        "upload_s": round(upload_s, 2),
        "api_ready_s": round(startup_s, 2),
        "idle": _stats(idle),
        "during_upload": _stats(during),
        "code": os.environ.get("PYTHONPATH") or "this checkout",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    print(f"upload of {result['upload_mib']} MiB: {result['upload_s']} s; API ready after {result['api_ready_s']} s")
    print(f"{'GET /v1/jobs':<16}{'polls':>8}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for name in ("idle", "during_upload"):
        s = result[name]
        print(f"{name:<16}{s['polls']:>8}{s['p50_ms']:>10}{s['p95_ms']:>10}{s['max_ms']:>10}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "upload.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
