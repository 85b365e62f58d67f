"""A worker that is stopped (what Celery's shutdown signals call: `request_stop`) kills its job process
and puts the job back in `queued`, with the loop state of its last completed epoch, without counting
the attempt; the next run resumes it and its history equals an uninterrupted run. The job process
server and its forks leave SIGINT and SIGTERM to the worker."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from squeezer.db import Job, JobMetric, JobStatus
from squeezer.jobs import transitions
from squeezer.worker.execute import execute_job
from squeezer.worker.sandbox import process
from tests.helpers import api_client, upload_digits_job_inputs
from tests.worker.pausing import MID_EPOCH_3, RESUME_CONFIG, RESUME_RECIPE, marker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stop(monkeypatch):
    """This test's own stop flag (`request_stop` sets it for the whole process)."""
    event = threading.Event()
    monkeypatch.setattr(process, "_stopping", event)
    return event


@pytest.fixture
def service(tmp_path):
    client = api_client(tmp_path)
    app, headers = client.app, client.alice
    ids = upload_digits_job_inputs(client, headers, tmp_path)

    def submit(recipe):
        body = {"name": "j", "model": ids["model"], "train_data": ids["train"], "val_data": ids["val"]}
        response = client.post("/v1/jobs", headers=headers, json=body | {"config": RESUME_CONFIG, "recipe": recipe})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    return app, submit


def _when_file_appears(path, then):
    """Run `then()` on a thread once `path` exists (the job process writes it at a known point)."""

    def watch():
        deadline = time.monotonic() + 300
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        then()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _execute(app, job_id, sent, **kwargs):
    return execute_job(
        job_id, app.state.sessions, app.state.store, app.state.settings.home / "work",
        enqueue=lambda *job: sent.append(job), import_paths=[str(REPO)], **kwargs,
    )  # fmt: skip


@pytest.mark.slow
def test_a_worker_stopped_mid_epoch_requeues_its_job_which_resumes_as_if_never_stopped(
    service, stop, uninterrupted_job
):
    """The stop itself (`request_stop`, what Celery's warm and cold shutdowns call), in-process: the
    service tests stop real workers by SIGTERM, SIGQUIT and SIGKILL against the same reference."""
    app, submit = service
    job_id = submit(RESUME_RECIPE)
    workdir = app.state.settings.home / "work" / job_id
    sent: list[tuple[str, int]] = []

    watcher = _when_file_appears(workdir / marker(MID_EPOCH_3), process.request_stop)
    status = _execute(app, job_id, sent, target="tests.worker.pausing:run_job_paused_mid_epoch_3")
    watcher.join()
    assert status == "requeued"
    with app.state.sessions() as session:
        job = session.get(Job, job_id)
        epochs = [m.epoch for m in session.query(JobMetric).filter_by(job_id=job_id).order_by(JobMetric.epoch)]
    assert job.status == JobStatus.queued and job.error is None and job.worker_id is None
    assert job.attempts == 0  # a stop is not a failed attempt
    assert job.epoch == 2 and epochs == [0, 1, 2]  # stopped half into epoch 3
    assert sent == [(job_id, 0)] and job.enqueued_at is not None  # sent again by the stopping worker
    assert (workdir / "loop_state.pt").is_file()  # kept for the next worker

    stop.clear()  # the next worker
    assert _execute(app, job_id, sent) == "succeeded"
    with app.state.sessions() as session:
        job = session.get(Job, job_id)
        metrics = session.query(JobMetric).filter_by(job_id=job_id).order_by(JobMetric.epoch).all()
    assert job.attempts == 1 and job.finished_at is not None
    assert [m.epoch for m in metrics] == list(range(6))  # no gap, no duplicate
    assert [m.metric for m in metrics] == [r["metric"] for r in uninterrupted_job["records"]]
    reference_losses = [r["loss"] for r in uninterrupted_job["records"][1:]]
    assert [m.loss for m in metrics[1:]] == pytest.approx(reference_losses, rel=1e-5)
    assert job.result["metric"] == uninterrupted_job["metric"]


def test_a_job_being_cancelled_ends_cancelled_when_its_worker_stops(service, stop):
    app, submit = service
    job_id = submit({"epochs": 1})
    sent: list[tuple[str, int]] = []

    def cancel_then_stop():
        with app.state.sessions() as session:
            assert transitions.cancel(session, job_id) == JobStatus.cancelling
        process.request_stop()

    pid_file = app.state.settings.home / "work" / job_id / "pid"
    watcher = _when_file_appears(pid_file, cancel_then_stop)
    assert _execute(app, job_id, sent, target="tests.worker.hostile:sleep_forever") == "cancelled"
    watcher.join()
    with app.state.sessions() as session:
        job = session.get(Job, job_id)
    assert job.status == JobStatus.cancelled and job.finished_at is not None and sent == []


def test_a_stop_that_also_killed_the_job_process_server_still_requeues_the_job(service, stop):
    app, submit = service
    job_id = submit({"epochs": 1})
    sent: list[tuple[str, int]] = []

    def stop_and_kill_the_server():
        process.request_stop()
        server = process.prestart_job_server()
        os.kill(server.process.pid, 9)

    watcher = _when_file_appears(app.state.settings.home / "work" / job_id / "pid", stop_and_kill_the_server)
    assert _execute(app, job_id, sent, target="tests.worker.hostile:sleep_forever") == "requeued"
    watcher.join()
    with app.state.sessions() as session:
        assert session.get(Job, job_id).status == JobStatus.queued


def test_a_stopping_worker_leaves_a_job_it_receives_queued_and_sends_it_again(service, stop):
    app, submit = service
    job_id = submit({"epochs": 1})
    process.request_stop()
    sent: list[tuple[str, int]] = []
    assert _execute(app, job_id, sent, target="tests.worker.hostile:kill_itself") == "skipped"
    with app.state.sessions() as session:
        job = session.get(Job, job_id)
    assert (job.status, job.attempts, job.worker_id) == (JobStatus.queued, 0, None)  # never claimed
    assert sent == [(job_id, 0)]  # the message goes back for the next worker


def _ignored_signals(pid):
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("SigIgn:"))
    mask = int(line.split()[1], 16)
    return {sig for sig in (2, 15) if mask & (1 << (sig - 1))}


def test_the_job_process_server_and_its_jobs_leave_sigint_and_sigterm_to_the_worker(service, stop):
    app, submit = service
    job_id = submit({"epochs": 1})
    pid_file = app.state.settings.home / "work" / job_id / "pid"
    seen = {}

    def look_then_stop():
        server = process.prestart_job_server().process.pid
        job = int(pid_file.read_text())
        seen.update(
            server=_ignored_signals(server),
            job=_ignored_signals(job),
            group=os.getpgid(server) == server != os.getpgid(0),
        )
        process.request_stop()

    watcher = _when_file_appears(pid_file, look_then_stop)
    assert _execute(app, job_id, [], target="tests.worker.hostile:sleep_forever") == "requeued"
    watcher.join()
    assert seen == {"server": {2, 15}, "job": {2, 15}, "group": True}  # a terminal's Ctrl-C reaches the worker only


def test_a_worker_whose_job_was_requeued_by_the_sweep_stops_it_and_writes_nothing(service, stop):
    app, submit = service
    job_id = submit({"epochs": 1})
    pid_file = app.state.settings.home / "work" / job_id / "pid"
    sent: list[tuple[str, int]] = []

    def sweep():  # as if this worker had been unreachable for longer than stale_after_s
        requeued: list[str] = []
        while not requeued:  # a beat that lands between the sweep's read and its update wins: sweep again
            requeued = transitions.recover_stale_jobs(app.state.sessions, lambda *job: sent.append(job), 0, 3)[
                "requeued"
            ]
        assert requeued == [job_id]

    watcher = _when_file_appears(pid_file, sweep)
    status = _execute(app, job_id, [], target="tests.worker.hostile:sleep_forever", heartbeat_s=0.05)
    watcher.join()
    assert status == "lost"  # its next heartbeat found the job gone and killed the job process
    with app.state.sessions() as session:
        job = session.get(Job, job_id)
    assert (job.status, job.worker_id, job.error, job.finished_at) == (JobStatus.queued, None, None, None)
    assert sent == [(job_id, 0)]  # the sweep's message, for the next worker
    assert not Path(f"/proc/{int(pid_file.read_text())}").exists()  # killed and reaped before execute returned
