"""A job submitted over HTTP runs in a real Celery worker process on the embedded broker (SQLite)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from squeezer.api import create_app
from squeezer.api.keys import create_key
from squeezer.db.migrate import upgrade
from squeezer.settings import Settings
from squeezer.worker.celery_app import create_celery, enqueuer


@pytest.mark.slow
def test_job_runs_in_a_worker_process(tmp_path):
    settings = Settings(home=tmp_path)
    upgrade(settings.resolved_database_url())
    app = create_app(settings, enqueue=enqueuer(create_celery(settings)))
    with app.state.sessions() as session:
        _, secret = create_key(session, "tests")
    client = TestClient(app)
    headers = {"Authorization": f"Bearer {secret}"}
    ids = _upload_digits_job_inputs(client, headers, tmp_path)
    env = {**os.environ, "SQUEEZER_HOME": str(tmp_path)}
    log = (tmp_path / "worker.log").open("w")  # a file, not a pipe: a full pipe would block the worker
    worker = subprocess.Popen(
        [sys.executable, "-m", "squeezer.worker.celery_app"], env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        body = {
            "name": "int8",
            "model": ids["model"],
            "config": {"compression": {"algorithm": "quantization"}},
            "train_data": ids["train"],
            "val_data": ids["val"],
            "recipe": {"epochs": 1},
        }
        job_id = client.post("/v1/jobs", headers=headers, json=body).json()["id"]
        deadline = time.monotonic() + 180
        status = "queued"
        while time.monotonic() < deadline and status not in ("succeeded", "failed"):
            time.sleep(0.5)
            status = client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"]
        assert status == "succeeded"
        metrics = client.get(f"/v1/jobs/{job_id}/metrics", headers=headers).json()
        assert [m["epoch"] for m in metrics] == [0, 1]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    assert "squeezer.run_job" in (tmp_path / "worker.log").read_text()


def _upload_digits_job_inputs(client, headers, tmp_path):
    import io

    import numpy as np
    import torch

    from squeezer.examples.digits import digits_tensors
    from squeezer.examples.models import MLP

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
