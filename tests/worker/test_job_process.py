"""The worker side of a job process treats it as hostile: invalid messages, a sudden death, outputs that
are links to the worker's own files; and a job process dies with the worker that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from squeezer.db import Export, Job, JobMetric
from squeezer.worker.execute import execute_job
from tests.helpers import api_client, upload_digits_job_inputs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def submitted(tmp_path):
    """A migrated service with one queued job; returns (app, job id)."""
    client = api_client(tmp_path)
    app, headers = client.app, client.alice
    ids = upload_digits_job_inputs(client, headers, tmp_path)
    body = {"name": "j", "model": ids["model"], "train_data": ids["train"], "val_data": ids["val"]}
    body |= {"config": {"compression": {"algorithm": "quantization"}}, "recipe": {"epochs": 1}}
    response = client.post("/v1/jobs", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return app, response.json()["id"]


def run(app, job_id, target):
    status = execute_job(
        job_id, app.state.sessions, app.state.store, app.state.settings.home / "work",
        target=f"tests.worker.hostile:{target}", import_paths=[str(REPO)],
    )  # fmt: skip
    with app.state.sessions() as session:
        job = session.get(Job, job_id)
        exports = {e.kind: e for e in session.query(Export).filter_by(job_id=job_id)}
        return status, job, exports


def test_a_job_process_that_dies_fails_the_job_with_the_signal(submitted):
    status, job, _ = run(*submitted, "kill_itself")
    assert status == "failed" and job.error.startswith("the job process was killed by SIGKILL (out of memory?)")


def test_an_invalid_message_fails_the_job_and_names_the_problem(submitted):
    status, job, exports = run(*submitted, "send_invalid_message")
    assert status == "failed" and job.error.startswith("the job process sent an invalid message")
    assert "outputs" in job.error and "onnx" not in exports


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("flood_epochs", "the job process reported epoch 2, past the job's total_epochs of 1; it was stopped"),
        (
            "repeat_an_epoch",
            "the job process reported epoch 1 after epoch 1 (each epoch once, in order); it was stopped",
        ),
    ],
)
def test_epochs_beyond_the_jobs_or_out_of_order_stop_the_job(submitted, target, error):
    app, job_id = submitted  # a job of 1 epoch: it reports epochs 0 and 1
    status, job, _ = run(app, job_id, target)
    assert status == "failed" and job.error == error
    with app.state.sessions() as session:
        assert [m.epoch for m in session.query(JobMetric).filter_by(job_id=job_id).order_by(JobMetric.epoch)] == [0, 1]


def test_an_epoch_without_what_a_metric_row_needs_is_an_invalid_message(submitted):
    status, job, _ = run(*submitted, "report_an_epoch_without_a_budget")  # it used to crash the worker
    assert status == "failed" and job.error.startswith("the job process sent an invalid message")
    assert "accuracy_budget" in job.error and "wall_time_s" in job.error


def test_outputs_that_are_links_are_never_copied(submitted):
    app, job_id = submitted
    status, job, exports = run(app, job_id, "link_outputs_to_the_database")
    assert status == "succeeded"  # what it claimed; but its "outputs" point at the database
    assert "onnx" not in exports and "stripped" not in exports
    database = (app.state.settings.home / "squeezer.db").read_bytes()[:16]
    stored = [p.read_bytes()[:16] for p in app.state.store.root.rglob("*") if p.is_file()]
    assert database not in stored


def test_what_a_job_process_leaves_running_is_killed_when_it_ends(submitted):
    app, job_id = submitted
    status, job, _ = run(app, job_id, "leave_a_child_behind")  # returns: its pipes were not held open
    assert status == "succeeded"
    assert not _alive(job.result["statistics"]["child_pid"])


def test_a_worker_without_landlock_refuses_jobs_with_the_fix_in_the_reason(submitted, monkeypatch):
    monkeypatch.setattr("squeezer.worker.sandbox.confine.landlock_abi", lambda: 0)
    status, job, _ = run(*submitted, "kill_itself")
    assert status == "failed" and "cannot confine job processes as required: Landlock ABI absent" in job.error
    assert "SQUEEZER_SANDBOX=process" in job.error


WORKER = r"""
import sys
from squeezer.settings import get_settings
from squeezer.worker.celery_app import _resources
from squeezer.worker.execute import execute_job

settings = get_settings()
sessions, store = _resources(settings.resolved_database_url(), str(settings.resolved_storage_dir()))
execute_job(sys.argv[1], sessions, store, settings.home / "work", target=sys.argv[2], import_paths=[sys.argv[3]])
"""


def test_a_job_process_dies_with_its_worker(submitted):
    app, job_id = submitted
    env = os.environ | {"SQUEEZER_HOME": str(app.state.settings.home)}
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, job_id, "tests.worker.hostile:sleep_forever", str(REPO)], env=env
    )
    pid_file = app.state.settings.home / "work" / job_id / "pid"
    deadline = time.monotonic() + 120
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    job_pid = int(pid_file.read_text())
    os.kill(job_pid, 0)  # alive while its worker is
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    deadline = time.monotonic() + 10
    while _alive(job_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(job_pid)  # a resumed job never has two processes writing its loop state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (killed, not yet reaped by init) is dead too
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def test_a_landlock_without_signal_scoping_is_refused_unless_the_weaker_sandbox_is_accepted(tmp_path, monkeypatch):
    """ABI 4 and 5 cannot stop a job signalling the worker's other processes (kernels 6.7 to 6.11): such a
    worker used to run jobs silently; now it refuses them, naming what is missing, unless told to accept it."""
    client = api_client(tmp_path)
    ids = upload_digits_job_inputs(client, client.alice, tmp_path)
    body = {"name": "j", "model": ids["model"], "train_data": ids["train"], "val_data": ids["val"]}
    body |= {"config": {"compression": {"algorithm": "quantization"}}, "recipe": {"epochs": 1}}
    first, second = (client.post("/v1/jobs", headers=client.alice, json=body).json()["id"] for _ in range(2))
    monkeypatch.setattr("squeezer.worker.sandbox.confine.landlock_abi", lambda: 5)
    app = client.app

    def execute(job_id, **options):
        return execute_job(
            job_id, app.state.sessions, app.state.store, app.state.settings.home / "work",
            target="tests.worker.hostile:leave_a_child_behind", import_paths=[str(REPO)], **options,
        )  # fmt: skip

    assert execute(first) == "failed"
    with app.state.sessions() as session:
        error = session.get(Job, first).error
    assert "Landlock ABI 5" in error and "signalling other processes of the worker's user" in error, error
    assert "SQUEEZER_ACCEPT_WEAKER_SANDBOX=1" in error
    assert execute(second, accept_weaker_sandbox=True) == "succeeded"
