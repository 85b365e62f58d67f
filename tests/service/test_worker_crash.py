"""The API is stopped while one job runs and another waits, and the worker is killed with SIGKILL in the
middle of an epoch while the API is down. A new API process's stale-job sweep requeues the job, a
second worker resumes it from the last completed epoch, the result equals an uninterrupted run, and
the waiting job runs once. The first worker's job processes pause half into epoch 3
(`tests/worker/pausing.py`), so the kill lands there by construction, not after a guessed time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from squeezer.api import create_app
from squeezer.api.keys import create_key
from squeezer.client import Client
from squeezer.db import Job
from squeezer.db.migrate import upgrade
from squeezer.settings import Settings
from tests.helpers import live_server, read_tensorboard_zip, write_digits_job_files
from tests.worker.pausing import MID_EPOCH_3, RESUME_CONFIG, RESUME_RECIPE, marker, pause_hook, wait_for_file


def _worker(env, log_path):
    with log_path.open("a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "squeezer.worker.celery_app"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


@pytest.mark.slow
def test_a_killed_worker_job_resumes_across_an_api_restart_and_matches_an_uninterrupted_run(
    tmp_path, uninterrupted_job
):
    files = write_digits_job_files(tmp_path)
    reference = uninterrupted_job["records"]  # the same job, never interrupted
    settings = Settings(home=tmp_path / "home", heartbeat_s=0.5, stale_after_s=3, sweep_interval_s=0.5)
    upgrade(settings.resolved_database_url())
    app = create_app(settings)  # its lifespan runs the stale-job sweep (not while it is stopped)
    with app.state.sessions() as session:
        _, secret = create_key(session, "crash")
    env = {**os.environ, "SQUEEZER_HOME": str(settings.home), "SQUEEZER_HEARTBEAT_S": "0.5"}
    log_path = tmp_path / "workers.log"
    hook = pause_hook(tmp_path / "hook", MID_EPOCH_3)
    first = _worker({**env, "PYTHONPATH": os.pathsep.join(filter(None, (str(hook), env.get("PYTHONPATH"))))}, log_path)
    second = None
    try:
        with live_server(app) as url, Client(url, secret) as client:
            ids = {n: client.artifacts.upload(p, "model" if n == "model" else "dataset") for n, p in files.items()}
            job = client.jobs.create("crash", ids["model"], RESUME_CONFIG, ids["train"], ids["val"], RESUME_RECIPE)
            waiting = client.jobs.create(
                "waiting", ids["model"], RESUME_CONFIG, ids["train"], ids["val"], {"epochs": 1}
            )
            wait_for_file(settings.home / "work" / job.id / marker(MID_EPOCH_3), first)  # paused half into epoch 3
        # the API stops here, with `crash` running and `waiting` queued
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        app.state.engine.dispose()
        second = _worker(env, log_path)  # another worker: the job comes back to it through the new API's sweep
        app = create_app(settings)
        with live_server(app) as url, Client(url, secret) as client:
            done = client.jobs.wait(job, timeout=300)
            metrics = client.jobs.metrics(job)
            tensorboard = client.jobs.download(done, "tensorboard", tmp_path)
            assert client.jobs.wait(waiting, timeout=300).status == "succeeded"
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=60)
    app.state.engine.dispose()

    assert done.status == "succeeded", done.error
    with app.state.sessions() as session:
        assert session.get(Job, done.id).attempts == 2  # claimed twice: once per worker
        assert session.get(Job, waiting.id).attempts == 1
    app.state.engine.dispose()
    assert [m.epoch for m in metrics] == list(range(6))  # no gap, no duplicate
    assert [m.metric for m in metrics] == [r["metric"] for r in reference]
    assert metrics[0].loss is None and reference[0]["loss"] is None  # epoch 0 is the untrained evaluation
    assert [m.loss for m in metrics[1:]] == pytest.approx([r["loss"] for r in reference[1:]], rel=1e-5)
    assert done.result.metric == uninterrupted_job["metric"]
    # the TensorBoard log of the resumed job: epoch 3 was started twice, and has one point like every other
    scalars = read_tensorboard_zip(tensorboard, tmp_path / "tensorboard")
    assert scalars["metric/validation"] == [(r["epoch"], pytest.approx(r["metric"])) for r in reference]
