"""A search on the whole service: PostgreSQL, a real Redis broker, two Celery workers, the API on loopback
and the SDK. Six candidates run in parallel; one worker is killed with SIGKILL in the middle of a
candidate's epoch (its job process pauses there, so the kill lands there by construction), a new worker
takes its place, and the search still ends with every candidate finished, none run twice, and a
recommendation within the accuracy budget on a front with no dominated point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

from squeezer.api import create_app
from squeezer.api.keys import create_key
from squeezer.client import Client
from squeezer.db import Job, JobMetric
from squeezer.db.migrate import upgrade
from squeezer.examples.digits import digits_tensors
from squeezer.examples.models import MLP
from squeezer.settings import Settings
from tests.helpers import live_server
from tests.worker.pausing import marker, pause_hook

BATCH = 64
PAUSE_AT = 10  # of a job's training batches: half into its first epoch (1,200 samples make 19 batches)


def sparse_int8(level):
    schedule = {"schedule": "multistep", "multistep_steps": [], "multistep_sparsity_levels": [level]}
    return {
        "compression": [
            {"algorithm": "magnitude_sparsity", "sparsity_init": level, "params": schedule},
            {"algorithm": "quantization"},
        ]
    }


CANDIDATES = [
    "int8",
    "int8_sparsity50",
    "int8_sparsity50_kd",
    {"name": "sparse70_int8", "config": sparse_int8(0.7)},
    {"name": "sparse85_int8", "config": sparse_int8(0.85)},
    {"name": "sparse95_int8", "config": sparse_int8(0.95)},
]


def trained_mlp():
    torch.manual_seed(0)
    x, y = digits_tensors(image_size=None)
    model = MLP(hidden=48)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[:1200]), y[:1200]).backward()
        optimizer.step()
    return model.eval(), (x[:1200], y[:1200]), (x[1200:], y[1200:])


def worker(env, log_path):
    with log_path.open("a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "squeezer.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


def paused_job(work, process):
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        found = list(work.glob(f"*/{marker(PAUSE_AT)}"))
        if found:
            return found[0].parent.name
        time.sleep(0.05)
    raise AssertionError("no candidate paused in the first worker")


def dominates(a, b):
    """Over (metric, file size): the search's objective here. Sizes are exact; latency is not (ties within
    the timing noise are tested in tests/search), and on this MLP INT8 is not faster than FP32."""
    return (
        a.metric >= b.metric and a.size_bytes <= b.size_bytes and (a.metric > b.metric or a.size_bytes < b.size_bytes)
    )


@pytest.mark.slow
def test_a_search_on_two_workers_survives_a_killed_worker(tmp_path, redis_server, postgres_server):
    model, train, val = trained_mlp()
    settings = Settings(
        home=tmp_path / "home",
        database_url=postgres_server.create_database("search"),
        broker_url=redis_server.url,
        heartbeat_s=0.5,
        stale_after_s=3,
        sweep_interval_s=0.5,
    )
    upgrade(settings.resolved_database_url())
    app = create_app(settings)
    with app.state.sessions() as session:
        _, secret = create_key(session, "search")
    env = {
        **os.environ,
        "SQUEEZER_HOME": str(settings.home),
        "SQUEEZER_DATABASE_URL": settings.database_url,
        "SQUEEZER_BROKER_URL": settings.broker_url,
        "SQUEEZER_HEARTBEAT_S": "0.5",
    }
    log_path = tmp_path / "workers.log"
    hook = pause_hook(tmp_path / "hook", PAUSE_AT)
    doomed = worker({**env, "PYTHONPATH": os.pathsep.join(filter(None, (str(hook), env.get("PYTHONPATH"))))}, log_path)
    workers = [doomed, worker(env, log_path)]
    try:
        with live_server(app) as url, Client(url, secret) as client:
            search = client.search(
                model,
                torch.rand(1, 64),
                train,
                val,
                {"lr": 1e-3, "batch_size": BATCH},
                budget=0.5,
                candidates=CANDIDATES,
                max_total_epochs=12,
                objective="size",
                name="mlp",
            )
            assert [c.name for c in search.result.candidates] == [
                c if isinstance(c, str) else c["name"] for c in CANDIDATES
            ]
            killed = paused_job(settings.home / "work", doomed)  # a candidate half into an epoch
            os.kill(doomed.pid, signal.SIGKILL)
            doomed.wait(timeout=30)
            workers.append(worker(env, log_path))  # its replacement; the sweep sends the candidate again
            done = client.searches.wait(search, timeout=900)
            onnx = client.jobs.download(done.result.best.job_id, "onnx", tmp_path)
    finally:
        for process in workers:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=60)
    app.state.engine.dispose()

    result = done.result
    assert done.status == "succeeded" and done.finished_at is not None
    finished = {c.name: c for c in result.candidates}
    assert all(c.status in ("succeeded", "stopped") for c in finished.values()), finished
    with app.state.sessions() as session:
        for c in result.candidates:
            job = session.get(Job, c.job_id)
            assert job.attempts == (2 if job.id == killed else 1)  # only the killed candidate ran again
            epochs = [m.epoch for m in session.query(JobMetric).filter_by(job_id=job.id).order_by(JobMetric.epoch)]
            assert epochs == list(range(len(epochs))) and epochs[-1] == c.epochs  # resumed: no gap, no repeat
    app.state.engine.dispose()
    measured = [c for c in result.candidates if c.status == "succeeded"]
    assert set(result.front) <= {c.name for c in measured}
    for name in result.front:  # no point on the front is dominated by any finished candidate
        assert not any(dominates(other, finished[name]) for other in measured)
    best = result.best
    assert best is not None and best.within_budget and best.metric >= result.metric_floor
    # on the front, unless a sparse twin of the same size took its place there (the twin's zeros buy nothing)
    assert best.name in result.front or any(
        finished[name].sparse and finished[name].size_bytes >= best.size_bytes for name in result.front
    )
    assert best.size_bytes == min(c.size_bytes for c in measured if c.within_budget)
    session = ort.InferenceSession(str(onnx))
    logits = session.run(None, {session.get_inputs()[0].name: val[0].numpy()})[0]
    assert 100.0 * float((np.argmax(logits, 1) == val[1].numpy()).mean()) >= result.metric_floor - 1.0
