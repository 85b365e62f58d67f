"""Helpers shared by the tests that run jobs through the API: real inputs, and waiting for a result."""

from __future__ import annotations

import io
import time

import numpy as np
import torch

from squeezer.examples.digits import digits_tensors
from squeezer.examples.models import MLP


def upload_digits_job_inputs(client, headers, tmp_path):
    """An MLP as a .pt2 archive and digits train/val .npz files, uploaded; returns their artifact ids."""
    torch.manual_seed(0)
    program = torch.export.export(
        MLP(hidden=32).eval(), (torch.rand(2, 64),), dynamic_shapes=({0: torch.export.Dim("b", min=1)},)
    )
    torch.export.save(program, tmp_path / "m.pt2")
    x, y = digits_tensors(image_size=None)
    ids = {}
    for name, sl in (("train", slice(0, 1200)), ("val", slice(1200, None))):
        buf = io.BytesIO()
        np.savez(buf, x=x[sl].numpy(), y=y[sl].numpy())
        ids[name] = client.post(
            "/v1/artifacts", headers=headers, data={"kind": "dataset"}, files={"file": (f"{name}.npz", buf.getvalue())}
        ).json()["id"]
    ids["model"] = client.post(
        "/v1/artifacts",
        headers=headers,
        data={"kind": "model"},
        files={"file": ("m.pt2", (tmp_path / "m.pt2").read_bytes())},
    ).json()["id"]
    return ids


def wait_for_job(client, headers, job_id, timeout=180.0):
    """Poll until the job succeeded or failed (or the timeout passed); returns the last status."""
    deadline = time.monotonic() + timeout
    status = "queued"
    while status not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"]
    return status


class RecordingQueue:
    """A `JobQueue` that keeps what it was given: for tests that run jobs by hand, or not at all."""

    def __init__(self, reachable=True):
        self.jobs = []
        self.reachable = reachable

    def enqueue(self, job_id, priority):
        self.jobs.append((job_id, priority))

    def ping(self):
        if not self.reachable:
            raise ConnectionError("broker down (test)")
