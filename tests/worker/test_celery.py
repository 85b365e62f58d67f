"""A job submitted over HTTP runs in a real Celery worker process on the embedded broker (SQLite)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from squeezer.api import create_app
from squeezer.api.keys import create_key
from squeezer.db.migrate import upgrade
from squeezer.settings import Settings
from tests.helpers import upload_digits_job_inputs, wait_for_job


@pytest.mark.slow
def test_job_runs_in_a_worker_process(tmp_path):
    settings = Settings(home=tmp_path)
    upgrade(settings.resolved_database_url())
    app = create_app(settings)  # the default queue: Celery on the embedded broker
    with app.state.sessions() as session:
        _, secret = create_key(session, "tests")
    client = TestClient(app)
    headers = {"Authorization": f"Bearer {secret}"}
    ids = upload_digits_job_inputs(client, headers, tmp_path)
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
        assert wait_for_job(client, headers, job_id) == "succeeded"
        metrics = client.get(f"/v1/jobs/{job_id}/metrics", headers=headers).json()
        assert [m["epoch"] for m in metrics] == [0, 1]
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    assert "squeezer.run_job" in (tmp_path / "worker.log").read_text()
