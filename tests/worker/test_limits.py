"""A job cannot hold or exhaust its worker: cancel and the deadline act mid-epoch (keeping what the last
finished epoch saved), and a job past its memory, process, disk or CPU-time limit is stopped with the limit
named while the worker goes on to run the next job. Real job processes, real limits, a real database."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from squeezer.db import Export, Job, JobMetric
from squeezer.worker.execute import execute_job
from squeezer.worker.limits import GIB, JobLimits
from tests.helpers import api_client, upload_digits_job_inputs
from tests.worker.pausing import BATCH_SIZE, MID_EPOCH_3, marker

REPO = Path(__file__).resolve().parents[2]
GENEROUS = JobLimits(
    wall_time_s=3600, memory_bytes=16 * GIB, cpu_time_s=3600, processes=64, open_files=4096, disk_bytes=16 * GIB
)


@pytest.fixture
def service(tmp_path):
    client = api_client(tmp_path, max_active_jobs_per_key=50)
    ids = upload_digits_job_inputs(client, client.alice, tmp_path)
    return client, ids


def submit(client, ids, **recipe):
    body = {"name": "j", "model": ids["model"], "train_data": ids["train"], "val_data": ids["val"]}
    body |= {"config": {"compression": {"algorithm": "quantization"}}}
    body["recipe"] = {"epochs": 4, "batch_size": BATCH_SIZE, **recipe}
    response = client.post("/v1/jobs", headers=client.alice, json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def execute(client, job_id, target="squeezer.worker.runner:run_job", limits=GENEROUS):
    app = client.app
    return execute_job(
        job_id, app.state.sessions, app.state.store, app.state.settings.home / "work",
        target=target, import_paths=[str(REPO)], limits=limits, poll_s=0.5,
    )  # fmt: skip


def row(client, job_id):
    with client.app.state.sessions() as session:
        job = session.get(Job, job_id)
        exports = {e.kind for e in session.query(Export).filter_by(job_id=job_id)}
        epochs = [m.epoch for m in session.query(JobMetric).filter_by(job_id=job_id).order_by(JobMetric.epoch)]
        return job, exports, epochs


def wait_for(path: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"the job never reached {path.name}"
        time.sleep(0.05)


def cancel_when(path: Path, client, job_id) -> dict:
    """A user's cancel, sent from another thread once the job reaches `path`; the dict gets its time."""
    sent = {}

    def cancel() -> None:
        wait_for(path)
        sent["at"] = time.monotonic()
        sent["status"] = client.post(f"/v1/jobs/{job_id}/cancel", headers=client.alice).json()["status"]

    threading.Thread(target=cancel, daemon=True).start()
    return sent


def test_cancel_stops_a_stuck_epoch_within_seconds_and_keeps_the_last_finished_epoch(service):
    """The job process waits forever in epoch 3 (an epoch that never ends); before, cancel was read only
    when an epoch ended, so the job held its worker until then. Now the watch reads it within a second, and
    the job ends cancelled with epoch 2's outputs. The worker runs on the main thread, as Celery's solo pool
    does (its job process server stays warm between the stopped run and the export of what it saved)."""
    client, ids = service
    job_id = submit(client, ids)
    sent = cancel_when(client.app.state.settings.home / "work" / job_id / marker(MID_EPOCH_3), client, job_id)
    status = execute(client, job_id, "tests.worker.pausing:run_job_paused_mid_epoch_3")
    ended = time.monotonic() - sent["at"]
    assert sent["status"] == "cancelling" and ended < 10, ended  # the bound; the watch polls every 0.5 s
    job, exports, epochs = row(client, job_id)
    assert status == "cancelled" and job.status == "cancelled"
    assert epochs == [0, 1, 2]  # epoch 3 never finished
    assert {"onnx", "stripped", "checkpoint", "log"} <= exports  # epoch 2's model, exported after the stop
    assert job.result["metric"] is not None and "the outputs are epoch 2's" in job.result["warnings"][-1]


def test_a_cancel_before_the_first_epoch_stops_the_job_at_once(service):
    client, ids = service
    job_id = submit(client, ids)
    sent = cancel_when(client.app.state.settings.home / "work" / job_id / "pid", client, job_id)
    assert execute(client, job_id, "tests.worker.hostile:sleep_forever") == "cancelled"
    assert time.monotonic() - sent["at"] < 10
    job, exports, _ = row(client, job_id)
    assert job.status == "cancelled" and exports <= {"log"}  # nothing was trained, nothing to keep


def test_a_deadline_fails_the_job_keeps_its_checkpoint_and_the_worker_runs_the_next_job(service):
    client, ids = service
    stuck = submit(client, ids, max_wall_time_s=25)  # epochs 1 and 2 take a few seconds; epoch 3 never ends
    following = submit(client, ids, epochs=1)
    status = execute(client, stuck, "tests.worker.pausing:run_job_paused_mid_epoch_3")
    assert (client.app.state.settings.home / "work" / stuck).exists() is False  # cleaned up after the export
    job, exports, epochs = row(client, stuck)
    assert status == "failed" and job.error.startswith("deadline: the job ran past its wall-time limit"), job.error
    assert epochs == [0, 1, 2] and {"onnx", "checkpoint"} <= exports  # the best checkpoint stays downloadable
    assert "the outputs are epoch" in job.error
    assert execute(client, following) == "succeeded"  # the same worker (this thread, its job server) goes on


def test_a_recipe_may_not_ask_for_more_time_than_the_service_allows(service):
    client, ids = service
    body = {"name": "j", "model": ids["model"], "train_data": ids["train"], "val_data": ids["val"]}
    body |= {"config": {"compression": {"algorithm": "quantization"}}, "recipe": {"max_wall_time_s": 200_000}}
    response = client.post("/v1/jobs", headers=client.alice, json=body)
    assert response.status_code == 422 and response.json()["path"] == "$.recipe.max_wall_time_s"
    assert "at most 86400 s on this service" in response.json()["detail"]


@pytest.mark.parametrize(
    ("target", "limits", "reason"),
    [
        (
            "allocate_without_end",
            {"memory_bytes": int(1.5 * GIB)},
            r"memory limit of 1.50 GiB exceeded \((\d\.\d\d GiB in use|an allocation failed)",
        ),
        ("fork_without_end", {"processes": 8}, r"process limit of 8 exceeded \(\d+ running\)"),
        ("fill_the_disk", {"disk_bytes": 128 * 1024**2}, r"disk limit of 128 MiB (exceeded|reached)"),
        ("spin_the_cpu", {"cpu_time_s": 2}, r"CPU-time limit of 2 s exceeded"),
    ],
)
def test_a_job_past_a_resource_limit_fails_naming_it_and_the_worker_goes_on(service, target, limits, reason):
    import re

    client, ids = service
    hostile, following = submit(client, ids), submit(client, ids, epochs=1)
    status = execute(client, hostile, f"tests.worker.hostile:{target}", JobLimits(**{**GENEROUS.to_dict(), **limits}))
    job, _, _ = row(client, hostile)
    assert status == "failed" and re.match(reason, job.error), job.error
    assert execute(client, following) == "succeeded"


def test_a_search_past_its_wall_time_budget_stops_a_candidate_mid_epoch(service, tmp_path):
    """max_wall_time_s used to be read after each epoch; a candidate in a long epoch ran on past it."""
    client, _ = service
    (tmp_path / "trained").mkdir()
    ids = upload_digits_job_inputs(client, client.alice, tmp_path / "trained", trained=True)  # FP32 ~92%
    body = {"name": "s", "model": ids["model"], "train_data": ids["train"], "val_data": ids["val"]}
    # 50% sparsity is below the FP32 metric at epoch 0, so the candidate trains (and waits in epoch 1)
    body |= {"accuracy": {"maximal_absolute_accuracy_degradation": 0.0}, "candidates": ["int8_sparsity50"]}
    body |= {"budget": {"max_wall_time_s": 20}, "recipe": {"batch_size": BATCH_SIZE, "epochs": 4}}
    created = client.post("/v1/searches", headers=client.alice, json=body)
    assert created.status_code == 201, created.text
    job_id = created.json()["result"]["candidates"][0]["job_id"]
    status = execute(client, job_id, "tests.worker.pausing:run_job_paused_in_epoch_1")
    job, exports, _ = row(client, job_id)
    assert status == "cancelled" and job.stopped_reason == "the search's wall-time budget was spent"
    assert "onnx" in exports  # the candidate keeps its last finished epoch, and the search can rank it
