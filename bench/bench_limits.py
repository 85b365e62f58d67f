"""What the job limits cost: the same job run by the worker logic (`execute_job`, a real job process)
with the limits and the watch at their defaults (kernel limits set, the job measured every second) and
without them (no kernel limits, the row read every 10 s, as the heartbeat did before), alternating, side
by side in one run. Also how long a cancel takes to stop a job stuck in an epoch. Prints a table and
writes bench/results/limits.json.

    python bench/bench_limits.py [--epochs 2] [--pairs 3]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from fastapi.testclient import TestClient

from squeezer.api import create_app
from squeezer.api.keys import create_key
from squeezer.db.migrate import upgrade
from squeezer.examples.digits import digits_tensors
from squeezer.examples.models import ResidualCNN
from squeezer.settings import Settings
from squeezer.worker.execute import execute_job
from squeezer.worker.limits import JobLimits

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]


class _Queue:
    def enqueue(self, job_id: str, priority: int) -> None:
        pass

    def ping(self) -> None:
        pass


def _service(home: Path) -> tuple[TestClient, dict[str, str], dict[str, str]]:
    """An API on SQLite with a digits CNN and its data uploaded; (client, headers, artifact ids)."""
    settings = Settings(home=home)
    upgrade(settings.resolved_database_url())
    app = create_app(settings, queue=_Queue())
    with app.state.sessions() as session:
        _, secret = create_key(session, "bench")
    client, headers = TestClient(app), {"Authorization": f"Bearer {secret}"}
    torch.manual_seed(0)
    x, y = digits_tensors(image_size=32)
    program = torch.export.export(
        ResidualCNN().eval(), (torch.rand(2, 1, 32, 32),), dynamic_shapes=({0: torch.export.Dim("b", min=1)},)
    )
    files = {"model": ("m.pt2", io.BytesIO())}
    torch.export.save(program, files["model"][1])
    ids = {}
    for name, sl in (("train", slice(0, 1200)), ("val", slice(1200, None))):
        buffer = io.BytesIO()
        np.savez(buffer, x=x[sl].numpy(), y=y[sl].numpy())
        files[name] = (f"{name}.npz", buffer)
    for name, (filename, buffer) in files.items():
        kind = "model" if name == "model" else "dataset"
        response = client.post(
            "/v1/artifacts", headers=headers, data={"kind": kind}, files={"file": (filename, buffer.getvalue())}
        )
        ids[name] = response.json()["id"]
    return client, headers, ids


def _submit(client: TestClient, headers: dict[str, str], ids: dict[str, str], epochs: int) -> str:
    body = {"name": "bench", "model": ids["model"], "train_data": ids["train"], "val_data": ids["val"]}
    body |= {"config": {"compression": {"algorithm": "quantization"}}, "recipe": {"epochs": epochs}}
    return str(client.post("/v1/jobs", headers=headers, json=body).json()["id"])


def _run(client: TestClient, job_id: str, limited: bool, target: str = "squeezer.worker.runner:run_job") -> float:
    app = client.app
    limits = JobLimits.from_settings(app.state.settings) if limited else None  # type: ignore[attr-defined]
    started = time.perf_counter()
    status = execute_job(
        job_id,
        app.state.sessions,  # type: ignore[attr-defined]
        app.state.store,  # type: ignore[attr-defined]
        app.state.settings.home / "work",  # type: ignore[attr-defined]
        target=target,
        import_paths=[str(REPO)],
        limits=limits,
        poll_s=1.0 if limited else 10.0,
    )
    elapsed = time.perf_counter() - started
    assert status in ("succeeded", "cancelled"), status
    return elapsed


def _cancel_latency(client: TestClient, headers: dict[str, str], ids: dict[str, str]) -> float:
    """Seconds from a cancel to the job's end, for a job stuck in epoch 3 (tests/worker/pausing.py)."""
    sys.path.insert(0, str(REPO))
    from tests.worker.pausing import MID_EPOCH_3, marker

    job_id = _submit(client, headers, ids, 4)
    home = client.app.state.settings.home  # type: ignore[attr-defined]
    sent: dict[str, float] = {}

    def cancel() -> None:
        while not (home / "work" / job_id / marker(MID_EPOCH_3)).exists():
            time.sleep(0.05)
        sent["at"] = time.perf_counter()
        client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)

    threading.Thread(target=cancel, daemon=True).start()
    _run(client, job_id, True, "tests.worker.pausing:run_job_paused_mid_epoch_3")
    return time.perf_counter() - sent["at"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="squeezer-bench-limits-") as tmp:
        client, headers, ids = _service(Path(tmp))
        _run(client, _submit(client, headers, ids, 1), True)  # warm: the job server, the caches
        times: dict[str, list[float]] = {"with limits": [], "without": []}
        for _ in range(args.pairs):
            for name in ("without", "with limits"):
                times[name].append(_run(client, _submit(client, headers, ids, args.epochs), name == "with limits"))
        cancel_s = _cancel_latency(client, headers, ids)
    medians = {name: statistics.median(values) for name, values in times.items()}
    overhead = 100 * (medians["with limits"] / medians["without"] - 1)
    print(f"{'run':<14}{'median s':>10}  all runs (s)")
    for name, values in times.items():
        print(f"{name:<14}{medians[name]:>10.2f}  {', '.join(f'{v:.2f}' for v in values)}")
    print(f"overhead of the limits: {overhead:+.2f}% (ResidualCNN, digits 32x32, {args.epochs} epochs)")
    print(f"cancel of a job stuck in an epoch: ended {cancel_s:.2f} s after the cancel (outputs of epoch 2 kept)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "limits.json").write_text(
        json.dumps(
            {
                "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.machine()},
                "epochs": args.epochs,
                "seconds": times,
                "median_s": medians,
                "overhead_percent": overhead,
                "cancel_stuck_epoch_s": cancel_s,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
