"""A worker stopped as `docker compose stop` / `restart` stops it: SIGTERM to the worker alone (PID 1 of
its container), in the middle of an epoch, with PostgreSQL and a Redis broker as in docker-compose.yml;
and the same with SIGQUIT, Celery's cold shutdown (which cancels the running task).
The job goes back to `queued` with its last completed epoch and the stopping worker sends it again; the
next worker (the restarted container) finishes it with the history and result of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from squeezer.api import create_app
from squeezer.api.keys import create_key
from squeezer.client import Client
from squeezer.db import Job, JobMetric, JobStatus
from squeezer.db.migrate import upgrade
from squeezer.settings import Settings
from tests.helpers import live_server, write_digits_job_files
from tests.worker.pausing import MID_EPOCH_3, RESUME_CONFIG, RESUME_RECIPE, marker, pause_hook, wait_for_file


def _container_worker(env, log_path):
    """`squeezer worker` as a container's only process: a session of its own, so signals reach it alone."""
    with log_path.open("a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "squeezer.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGQUIT], ids=["warm", "cold"])
def test_a_worker_stopped_like_docker_compose_stop_leaves_its_job_to_the_next(
    tmp_path, redis_server, postgres_server, stop_signal, uninterrupted_job
):
    files = write_digits_job_files(tmp_path)
    reference = uninterrupted_job["records"]
    settings = Settings(
        home=tmp_path / "data",
        database_url=postgres_server.create_database(f"compose_stop_{stop_signal.name.lower()}"),
        broker_url=redis_server.url,
    )
    upgrade(settings.resolved_database_url())
    app = create_app(settings)  # Celery on Redis
    with app.state.sessions() as session:
        _, secret = create_key(session, "compose")
    env = {
        **os.environ,
        "SQUEEZER_HOME": str(settings.home),
        "SQUEEZER_DATABASE_URL": settings.database_url,
        "SQUEEZER_BROKER_URL": settings.broker_url,
    }
    hook = pause_hook(tmp_path / "hook", MID_EPOCH_3)
    log_path = tmp_path / "workers.log"
    workers = [
        _container_worker(
            {**env, "PYTHONPATH": os.pathsep.join(filter(None, (str(hook), env.get("PYTHONPATH"))))}, log_path
        )
    ]
    try:
        with live_server(app) as url, Client(url, secret) as client:
            ids = {n: client.artifacts.upload(p, "model" if n == "model" else "dataset") for n, p in files.items()}
            job = client.jobs.create("compose", ids["model"], RESUME_CONFIG, ids["train"], ids["val"], RESUME_RECIPE)
            wait_for_file(settings.home / "work" / job.id / marker(MID_EPOCH_3), workers[0])
            workers[0].send_signal(stop_signal)  # docker compose stop: SIGTERM to PID 1, SIGKILL 10 s later
            code = workers[0].wait(timeout=120)
            assert code == 0
            with app.state.sessions() as session:
                row = session.get(Job, job.id)
                assert (row.status, row.error, row.attempts) == (JobStatus.queued, None, 0)
                assert session.query(JobMetric).filter_by(job_id=job.id).count() == 3  # epochs 0-2

            workers.append(_container_worker(env, log_path))  # the container starts again
            done = client.jobs.wait(job, timeout=300)
            metrics = client.jobs.metrics(job)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=60)
    with app.state.sessions() as session:
        attempts = session.get(Job, job.id).attempts
    app.state.engine.dispose()

    assert done.status == "succeeded", done.error
    assert attempts == 1  # the stop was not counted
    assert [m.epoch for m in metrics] == list(range(6))  # no gap, no duplicate
    assert [m.metric for m in metrics] == [r["metric"] for r in reference]
    assert [m.loss for m in metrics[1:]] == pytest.approx([r["loss"] for r in reference[1:]], rel=1e-5)
    assert done.result.metric == uninterrupted_job["metric"]
