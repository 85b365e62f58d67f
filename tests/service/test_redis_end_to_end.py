"""The whole service as in production: PostgreSQL, a real Redis broker, a Celery worker process, the API
on loopback, and the SDK. The residual digits CNN goes in; a verified INT8 ONNX within budget comes out."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from squeezer.api import create_app
from squeezer.api.keys import create_key
from squeezer.client import Client
from squeezer.db import JobMetric
from squeezer.db.migrate import upgrade
from squeezer.examples.digits import digits_split
from squeezer.settings import Settings
from tests.helpers import live_server

BUDGET = 1.0
CONFIG = {
    "input_info": {"sample_size": [1, 1, 32, 32]},
    "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 256}}},
    "accuracy_aware_training": {
        "mode": "early_exit",
        "params": {"maximal_absolute_accuracy_degradation": BUDGET, "maximal_total_epochs": 3},
    },
}


@pytest.mark.slow
def test_int8_early_exit_job_through_redis_and_a_worker(tmp_path, redis_server, postgres_server, trained_cnn):
    model, fp32_accuracy = trained_cnn
    (x, y), (x_val, y_val) = digits_split(image_size=32)  # the split the model was trained on
    settings = Settings(
        home=tmp_path,
        database_url=postgres_server.create_database("e2e"),
        broker_url=redis_server.url,
    )
    upgrade(settings.resolved_database_url())
    app = create_app(settings)  # the default queue: Celery, here on Redis
    with app.state.sessions() as session:
        _, secret = create_key(session, "e2e")
    env = {
        **os.environ,
        "SQUEEZER_HOME": str(tmp_path),
        "SQUEEZER_DATABASE_URL": settings.database_url,
        "SQUEEZER_BROKER_URL": settings.broker_url,
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:  # a file, not a pipe: a full pipe would block the worker
        worker = subprocess.Popen(
            [sys.executable, "-m", "squeezer.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        with live_server(app) as url, Client(url, secret) as client:
            assert client.request("GET", "/readyz").json() == {"status": "ok", "database": "ok", "broker": "ok"}
            job = client.compress(
                model,
                torch.rand(1, 1, 32, 32),
                CONFIG,
                (x, y),
                (x_val, y_val),
                {"lr": 1e-4, "batch_size": 64},
                name="cnn-int8",
            )
            done = client.jobs.wait(job, timeout=600)
            assert done.status == "succeeded", done.error
            assert done.accuracy_budget is not None and done.accuracy_budget >= 0  # within the allowed drop
            assert done.result.statistics["quantization"]["activation_quantizers"]["total"] > 0
            onnx = client.jobs.download(done, "onnx", tmp_path)
            history = client.jobs.metrics(done)
    finally:
        worker.terminate()
        worker.wait(timeout=60)

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x_val.numpy()})[0]
    onnx_accuracy = 100.0 * float((logits.argmax(1) == y_val.numpy()).mean())
    assert onnx_accuracy >= fp32_accuracy - BUDGET
    assert abs(onnx_accuracy - done.current_metric) <= 0.5

    # the metric history in the database is exactly what the worker logged, epoch by epoch
    logged = {
        int(epoch): float(metric)
        for epoch, metric in re.findall(rf"job {done.id} epoch (\d+): metric ([0-9.]+)", log_path.read_text())
    }
    assert logged and sorted(logged) == list(range(len(logged)))
    assert {m.epoch: round(m.metric, 4) for m in history} == logged
    with app.state.sessions() as db:
        rows = db.query(JobMetric).filter_by(job_id=done.id).order_by(JobMetric.epoch).all()
        assert [(r.epoch, r.metric) for r in rows] == [(m.epoch, m.metric) for m in history]
    app.state.engine.dispose()
    assert np.isfinite(done.best_metric)
