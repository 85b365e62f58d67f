"""`squeezer serve` stopped the way a terminal (Ctrl-C: SIGINT) and a process manager (SIGTERM) stop it,
to the whole process group, each time in the middle of an epoch: the running job goes back to `queued`
with its last completed epoch, and the next `squeezer serve` finishes it with the history and result of
an uninterrupted run. The job processes pause at a chosen batch (`tests/worker/pausing.py`), so each
signal lands mid-epoch by construction, not after a guessed time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from squeezer.client import Client, wait_ready
from squeezer.db import Job, JobMetric, JobStatus, make_engine, make_session_factory
from squeezer.recipe import Recipe
from squeezer.settings import Settings
from squeezer.worker.runner import run_job
from tests.helpers import write_digits_job_files
from tests.servers import free_port
from tests.worker.pausing import BATCH_SIZE, BATCHES_PER_EPOCH, MID_EPOCH_3, marker, pause_hook, wait_for_file

CONFIG = {"compression": {"algorithm": "quantization"}}
RECIPE = {"epochs": 5, "batch_size": BATCH_SIZE, "lr": 1e-3, "seed": 3}
MID_EPOCH_4_OF_A_RUN_RESUMED_AT_3 = BATCHES_PER_EPOCH + BATCHES_PER_EPOCH // 2


class Serve:
    """`squeezer serve` in a process group of its own, as a shell starts a foreground command."""

    def __init__(self, home, log_path, pythonpath=None):
        self.port = free_port()
        env = {**os.environ, "SQUEEZER_HOME": str(home)}
        if pythonpath is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath), env.get("PYTHONPATH")) if p)
        with log_path.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "squeezer.cli", "serve", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_ready(self.url, timeout=120, alive=lambda: self.process.poll() is None)

    def signal_group(self, sig):
        os.killpg(self.process.pid, sig)  # the whole group, as a terminal's Ctrl-C or `kill -TERM -PGID`
        self.process.wait(timeout=120)

    def close(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _row(sessions, job_id):
    with sessions() as session:
        job = session.get(Job, job_id)
        epochs = [m.epoch for m in session.query(JobMetric).filter_by(job_id=job_id).order_by(JobMetric.epoch)]
        return job, epochs


@pytest.mark.slow
def test_serve_stopped_by_sigint_then_sigterm_mid_epoch_finishes_the_job_as_if_never_stopped(tmp_path):
    files = write_digits_job_files(tmp_path)
    reference = run_job(files["model"], CONFIG, files["train"], files["val"], Recipe(**RECIPE), tmp_path / "ref")
    home = tmp_path / "home"
    sessions = make_session_factory(make_engine(Settings(home=home).resolved_database_url()))
    log_path = tmp_path / "serve.log"
    serves = []
    try:
        serves.append(Serve(home, log_path, pause_hook(tmp_path / "hook3", MID_EPOCH_3)))
        with Client(serves[-1].url, (home / "api_key").read_text().strip()) as client:
            ids = {n: client.artifacts.upload(p, "model" if n == "model" else "dataset") for n, p in files.items()}
            job_id = client.jobs.create("stopped", ids["model"], CONFIG, ids["train"], ids["val"], RECIPE).id
        workdir = home / "work" / job_id

        wait_for_file(workdir / marker(MID_EPOCH_3), serves[-1].process)  # paused half into epoch 3
        serves[-1].signal_group(signal.SIGINT)
        job, epochs = _row(sessions, job_id)
        assert (job.status, job.error, job.attempts, epochs) == (JobStatus.queued, None, 0, [0, 1, 2])

        serves.append(Serve(home, log_path, pause_hook(tmp_path / "hook4", MID_EPOCH_4_OF_A_RUN_RESUMED_AT_3)))
        wait_for_file(
            workdir / marker(MID_EPOCH_4_OF_A_RUN_RESUMED_AT_3), serves[-1].process
        )  # resumed, half into epoch 4
        serves[-1].signal_group(signal.SIGTERM)
        assert serves[-1].process.returncode == 128 + signal.SIGTERM  # after waiting for its worker
        job, epochs = _row(sessions, job_id)
        assert (job.status, job.error, job.attempts, epochs) == (JobStatus.queued, None, 0, [0, 1, 2, 3])

        serves.append(Serve(home, log_path))
        with Client(serves[-1].url, (home / "api_key").read_text().strip()) as client:
            done = client.jobs.wait(job_id, timeout=300)
            metrics = client.jobs.metrics(job_id)
        serves[-1].signal_group(signal.SIGTERM)
        job, _ = _row(sessions, job_id)
    finally:
        for serve in serves:
            serve.close()
        sessions.kw["bind"].dispose()

    assert done.status == "succeeded", done.error
    assert job.attempts == 1  # neither stop counted as a failed attempt
    assert [m.epoch for m in metrics] == list(range(6))  # no gap, no duplicate
    assert [m.metric for m in metrics] == [r["metric"] for r in reference.records]
    assert [m.loss for m in metrics[1:]] == pytest.approx([r["loss"] for r in reference.records[1:]], rel=1e-5)
    assert done.result.metric == reference.metric
