"""Hostile uploads against a running API (issue 25, item 4): zip bombs and array headers that claim other
bytes than the file holds. For each upload: the answer, the API process's peak resident memory above what
it held before the request (its peak is reset through /proc/<pid>/clear_refs first), and the time to the
answer. The API runs alone (uvicorn, embedded SQLite, no worker). Prints a table and writes
bench/results/bounded_reads.json.

    python bench/bench_bomb.py [--gib 1] [--dataset-gib 5] [--baseline DIR]

`--baseline DIR` runs the same uploads against the code in DIR too (for instance the tree before this
change: `git archive <commit> squeezer | tar -x -C DIR`), one column each.
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
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

# the tests' builders of hostile uploads are reused, not copied
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service_common import free_port

from squeezer.client import wait_ready
from tests.uploads import lying_npz, lying_safetensors, npz_bomb, safetensors_offsets, zip_bomb_pt2

RESULTS = Path(__file__).parent / "results"
HERE = str(Path(__file__).resolve().parents[1])


def _pt2(folder: Path) -> bytes:
    import torch

    from squeezer.examples.models import MLP

    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(MLP().eval(), (torch.rand(2, 64),), dynamic_shapes=({0: batch},))
    torch.export.save(program, folder / "m.pt2")
    return (folder / "m.pt2").read_bytes()


def cases(folder: Path, gib: float, dataset_gib: float) -> list[tuple[str, str, str, Callable[[], bytes], int]]:
    """(what, kind, filename, build, bytes it unpacks to); each built when it is sent."""
    pt2 = _pt2(folder)
    size = int(gib * (1 << 30))
    begin = safetensors_offsets("x")[0]
    return [
        ("model.json deflated", "model", "bomb.pt2", lambda: zip_bomb_pt2(pt2, size), size),
        ("model.json deflated, directory says 1 KiB", "model", "bomb.pt2", lambda: zip_bomb_pt2(pt2, size, True), size),
        (
            "model.json bzip2, directory says 1 KiB",
            "model",
            "bomb.pt2",
            lambda: zip_bomb_pt2(pt2, size, True, zipfile.ZIP_BZIP2),
            size,
        ),
        (
            "npz x deflated",
            "dataset",
            "bomb.npz",
            lambda: npz_bomb(int(dataset_gib * (1 << 30))),
            int(dataset_gib * (1 << 30)),
        ),
        ("npz header claims 8e9 rows", "dataset", "d.npz", lambda: lying_npz(b"(8, 64)", b"(8000000000, 64)"), 2048),
        (
            "safetensors header claims 2 GB",
            "dataset",
            "d.safetensors",
            lambda: lying_safetensors(shape=[8_000_000, 64], data_offsets=[begin, begin + 2_048_000_000]),
            2112,
        ),
    ]


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise KeyError(field)


@contextmanager
def api(root: Path, code: str) -> Iterator[tuple[str, dict[str, str], int]]:
    """uvicorn serving `code`'s API; yields its URL, the authorization header and its pid."""
    env = {**os.environ, "PYTHONPATH": code, "SQUEEZER_HOME": str(root), "SQUEEZER_RATE_LIMIT": "100000/minute"}
    cli = [sys.executable, "-m", "squeezer.cli"]
    root.mkdir(parents=True)
    # run from `root`: `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH
    run = {"env": env, "cwd": root, "check": True, "capture_output": True, "text": True}
    subprocess.run([*cli, "db", "upgrade"], **run)
    key = subprocess.run([*cli, "keys", "create", "bench"], **run)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "squeezer.api:create_app", "--port", str(port)],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(url)
        yield url, {"Authorization": f"Bearer {key.stdout.strip()}"}, server.pid
    finally:
        server.terminate()
        server.wait()


def send(url: str, headers: dict[str, str], pid: int, kind: str, name: str, data: bytes) -> dict[str, Any]:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the current RSS
    before = _kib(pid, "VmRSS:")
    start = time.perf_counter()
    with httpx.Client(base_url=url, headers=headers, timeout=600) as http:
        response = http.post("/v1/artifacts", data={"kind": kind}, files={"file": (name, data)})
    seconds = time.perf_counter() - start
    body = response.json()
    return {
        "status": response.status_code,
        "title": body.get("title", "accepted"),
        "detail": body.get("detail", ""),
        "peak_rss_growth_mib": round((_kib(pid, "VmHWM:") - before) / 1024, 1),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="what each model.json bomb unpacks to")
    parser.add_argument("--dataset-gib", type=float, default=5.0, help="what the .npz bomb unpacks to")
    parser.add_argument("--baseline", help="a tree with other code to run the same uploads against")
    args = parser.parse_args()
    codes = {"this checkout": HERE, **({"baseline": str(Path(args.baseline).resolve())} if args.baseline else {})}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="squeezer-bomb-") as tmp:
        root = Path(tmp)
        built = cases(root, args.gib, args.dataset_gib)
        for label, code in codes.items():
            with api(root / label.replace(" ", "-"), code) as (url, headers, pid):
                for i, (what, kind, name, build, unpacked) in enumerate(built):
                    data = build()
                    result = send(url, headers, pid, kind, name, data)
                    if len(rows) <= i:
                        rows.append({"case": what, "upload_kib": round(len(data) / 1024), "unpacks_to": unpacked})
                    rows[i][label] = result
                    print(f"{label}: {what}: {result['status']} {result['title']}", flush=True)
    width = max(len(r["case"]) for r in rows) + 2
    print(f"\n{'upload':<{width}}{'KiB':>7}" + "".join(f"{c:>52}" for c in codes))
    print(f"{'':<{width}}{'':>7}" + f"{'answer':>32}{'peak RSS +MiB':>14}{'s':>6}" * len(codes))
    for row in rows:
        cells = "".join(
            f"{str(row[c]['status']) + ' ' + row[c]['title']:>32}{row[c]['peak_rss_growth_mib']:>14}"
            f"{row[c]['seconds']:>6}"
            for c in codes
        )
        print(f"{row['case']:<{width}}{row['upload_kib']:>7}{cells}")
    result = {
        "rows": rows,
        "code": {"this checkout": "this checkout", **({"baseline": args.baseline} if args.baseline else {})},
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bounded_reads.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
