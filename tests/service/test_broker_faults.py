"""The broker restarts: with persistence (AOF, as in docker-compose) a queued job's message survives and a
running job finishes; without it the messages are lost, and when it is down at submit time they are
never sent. Every job still runs, exactly once, and a waiting high-priority job runs before normal ones."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
import redis

from squeezer.api import create_app
from squeezer.api.keys import create_key
from squeezer.client import Client
from squeezer.db import Job
from squeezer.db.migrate import upgrade
from squeezer.settings import Settings
from tests.helpers import live_server, write_digits_job_files
from tests.servers import RedisServer

CONFIG = {"compression": {"algorithm": "quantization"}}


def _wait(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _service(tmp_path, persistent, requeue_after_s):
    """A running Redis, a migrated API (not yet serving) on it, a key and the digits job files."""
    broker = RedisServer(tmp_path, persistent=persistent)
    broker.start()
    settings = Settings(
        home=tmp_path / "home", broker_url=broker.url, requeue_after_s=requeue_after_s, sweep_interval_s=0.5
    )
    upgrade(settings.resolved_database_url())
    app = create_app(settings)
    with app.state.sessions() as session:
        _, secret = create_key(session, "faults")
    return broker, settings, app, secret, write_digits_job_files(tmp_path)


@pytest.mark.slow
def test_lost_messages_are_sent_again_and_priorities_are_honoured(tmp_path):
    broker, settings, app, secret, files = _service(tmp_path, persistent=False, requeue_after_s=3)
    worker = None
    try:
        with live_server(app) as url, Client(url, secret, retries=0) as client:
            ids = {n: client.artifacts.upload(p, "model" if n == "model" else "dataset") for n, p in files.items()}

            def submit(name, priority):
                return client.jobs.create(name, ids["model"], CONFIG, ids["train"], ids["val"], {"epochs": 1}, priority)

            normal, urgent = submit("normal", 0), submit("urgent", 9)
            broker.stop()
            broker.start()  # no persistence: both messages are gone
            assert redis.Redis.from_url(broker.url).dbsize() == 0

            broker.stop()
            middle = submit("middle", 5)  # accepted while the broker is down: stored, sent later
            assert middle.status == "queued"
            down = client.http.get("/readyz")
            assert down.status_code == 503 and "broker unreachable" in down.json()["detail"]
            broker.start()

            restarted = datetime.now(UTC)

            def all_sent_again():
                with app.state.sessions() as session:
                    jobs = session.query(Job).all()
                    return all(j.enqueued_at and j.enqueued_at.replace(tzinfo=UTC) > restarted for j in jobs)

            _wait(all_sent_again)  # by the API's sweep; only then does a worker start
            worker = _start_worker(settings, broker, tmp_path / "worker.log")
            done = [client.jobs.wait(job, timeout=300) for job in (normal, urgent, middle)]
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        broker.stop()
    app.state.engine.dispose()

    assert [j.status for j in done] == ["succeeded"] * 3
    with app.state.sessions() as session:
        rows = {j.name: j for j in session.query(Job)}
        assert {name: j.attempts for name, j in rows.items()} == {"normal": 1, "urgent": 1, "middle": 1}  # once each
        order = sorted(rows, key=lambda name: rows[name].started_at)
    app.state.engine.dispose()
    assert order == ["urgent", "middle", "normal"]  # priority 9, then 5, then 0


def _start_worker(settings, broker, log_path):
    env = {**os.environ, "SQUEEZER_HOME": str(settings.home), "SQUEEZER_BROKER_URL": broker.url}
    with log_path.open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "squeezer.worker.celery_app"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


@pytest.mark.slow
def test_a_persistent_redis_restarted_under_a_running_and_a_queued_job_loses_neither(tmp_path):
    # the sweep would send lost messages again after an hour: this test shows the AOF alone keeps them
    broker, settings, app, secret, files = _service(tmp_path, persistent=True, requeue_after_s=3600)
    worker = None
    try:
        with live_server(app) as url, Client(url, secret, retries=0) as client:
            ids = {n: client.artifacts.upload(p, "model" if n == "model" else "dataset") for n, p in files.items()}
            first, second = (
                client.jobs.create(name, ids["model"], CONFIG, ids["train"], ids["val"], {"epochs": 3})
                for name in ("first", "second")
            )
            sent = _enqueued_at(app)
            worker = _start_worker(settings, broker, tmp_path / "worker.log")
            _wait(lambda: client.jobs.get(first.id).status == "running")
            assert client.jobs.get(second.id).status == "queued"

            broker.stop()  # while `first` trains and `second` waits in the queue
            broker.start()
            assert redis.Redis.from_url(broker.url).dbsize() > 0  # the queue came back from the AOF

            done = [client.jobs.wait(job, timeout=300) for job in (first, second)]
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=60)
        broker.stop()

    assert [j.status for j in done] == ["succeeded"] * 2
    assert _enqueued_at(app) == sent  # neither message was sent again
    with app.state.sessions() as session:
        rows = {j.name: j for j in session.query(Job)}
        assert {name: j.attempts for name, j in rows.items()} == {"first": 1, "second": 1}
        assert [m.epoch for m in rows["first"].metrics] == [0, 1, 2, 3]
    app.state.engine.dispose()


def _enqueued_at(app):
    with app.state.sessions() as session:
        return {j.name: j.enqueued_at for j in session.query(Job)}
