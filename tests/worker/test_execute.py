"""A submitted job executed by the worker logic: claimed once, progress and metrics in the database,
exports in the store, failures recorded with their reason."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from squeezer.api import create_app
from squeezer.api.keys import create_key
from squeezer.db import Artifact, Export, Job, JobMetric
from squeezer.db.migrate import upgrade
from squeezer.settings import Settings
from squeezer.worker.execute import execute_job
from tests.helpers import RecordingQueue, upload_digits_job_inputs


@pytest.fixture
def service(tmp_path):
    settings = Settings(home=tmp_path)
    upgrade(settings.resolved_database_url())
    queue = RecordingQueue()
    app = create_app(settings, queue=queue)
    with app.state.sessions() as session:
        _, secret = create_key(session, "tests")
    client = TestClient(app)
    headers = {"Authorization": f"Bearer {secret}"}
    ids = upload_digits_job_inputs(client, headers, tmp_path)
    return app, client, headers, ids, queue, tmp_path


def submit(client, headers, ids, config, recipe=None):
    body = {
        "name": "job",
        "model": ids["model"],
        "config": config,
        "train_data": ids["train"],
        "val_data": ids["val"],
        "recipe": recipe or {"epochs": 2, "lr": 3e-3},
    }
    response = client.post("/v1/jobs", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_job_runs_once_and_records_everything(service):
    app, client, headers, ids, queue, tmp_path = service
    job_id = submit(client, headers, ids, {"compression": {"algorithm": "quantization"}})
    assert queue.jobs == [(job_id, 0)]
    status = execute_job(job_id, app.state.sessions, app.state.store, tmp_path / "work")
    assert status == "succeeded"
    assert execute_job(job_id, app.state.sessions, app.state.store, tmp_path / "work") == "skipped"  # duplicate
    job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    assert job["status"] == "succeeded" and job["epoch"] == 2 and job["finished_at"] is not None
    metrics = client.get(f"/v1/jobs/{job_id}/metrics", headers=headers).json()
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert metrics[-1]["metric"] == job["current_metric"]
    with app.state.sessions() as session:
        row = session.get(Job, job_id)
        assert row.attempts == 1 and row.result["statistics"]["quantization"]["activation_quantizers"]["total"] > 0
        exports = {e.kind: e for e in session.query(Export).filter_by(job_id=job_id)}
        assert set(exports) == {
            "onnx",
            "openvino",  # openvino is installed here (the dev extra)
            "stripped",
            "checkpoint",
            "original_graph",
            "compressed_graph",
            "log",
            "tensorboard",
        }
        assert app.state.store.path(exports["onnx"].storage_path).stat().st_size == exports["onnx"].size_bytes
        assert session.query(JobMetric).filter_by(job_id=job_id).count() == 3


def _sse(text):
    """(event, id, data) triples of a text/event-stream body."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        events.append((fields.get("event"), fields.get("id"), json.loads(fields["data"])))
    return events


def test_exports_download_with_etag_and_events_replay_the_history(service):
    app, client, headers, ids, _, tmp_path = service
    job_id = submit(client, headers, ids, {"compression": {"algorithm": "quantization"}}, {"epochs": 1})
    execute_job(job_id, app.state.sessions, app.state.store, tmp_path / "work")

    listed = {e["kind"]: e for e in client.get(f"/v1/jobs/{job_id}/artifacts", headers=headers).json()}
    assert listed["onnx"]["filename"] == "model.onnx" and listed["onnx"]["url"] == f"/v1/jobs/{job_id}/artifacts/onnx"
    onnx = client.get(listed["onnx"]["url"], headers=headers)
    assert onnx.status_code == 200 and len(onnx.content) == listed["onnx"]["size_bytes"]
    assert hashlib.sha256(onnx.content).hexdigest() == listed["onnx"]["sha256"] == onnx.headers["x-checksum-sha256"]
    assert onnx.headers["etag"] == f'"{listed["onnx"]["sha256"]}"'
    assert 'filename="job-model.onnx"' in onnx.headers["content-disposition"]
    session = ort.InferenceSession(onnx.content, providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: np.zeros((3, 64), np.float32)})[0].shape == (3, 10)
    again = client.get(listed["onnx"]["url"], headers={**headers, "If-None-Match": onnx.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    log = client.get(f"/v1/jobs/{job_id}/artifacts/log", headers=headers)
    assert log.headers["content-type"].startswith("text/plain") and "epoch 1 (" in log.text
    missing = client.get(f"/v1/jobs/{job_id}/artifacts/weights", headers=headers)
    assert missing.status_code == 404 and "'checkpoint'" in missing.json()["detail"]

    events = _sse(client.get(f"/v1/jobs/{job_id}/events", headers=headers).text)
    assert [(e, i) for e, i, _ in events] == [
        ("metric", "epoch-0"),
        ("metric", "epoch-1"),
        ("job", None),
        ("end", None),
    ]
    assert events[2][2]["status"] == "succeeded" and events[3][2] == {"status": "succeeded"}
    resumed = _sse(client.get(f"/v1/jobs/{job_id}/events", headers={**headers, "Last-Event-ID": "epoch-0"}).text)
    assert [i for _, i, _ in resumed if i] == ["epoch-1"]

    assert not (tmp_path / "work" / job_id).exists()  # the worker's scratch folder goes once exports are stored
    assert client.delete(f"/v1/jobs/{job_id}", headers=headers).status_code == 204
    assert not (app.state.store.root / "jobs" / job_id).exists()  # exports go with their job
    assert client.get(f"/v1/artifacts/{ids['model']}", headers=headers).status_code == 200  # uploads stay


def test_bad_data_is_refused_at_submit_and_fails_the_job_in_the_worker(service):
    app, client, headers, ids, _, tmp_path = service
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((4, 32), np.float32), y=np.zeros(4, np.int64))
    wrong = client.post(
        "/v1/artifacts", headers=headers, data={"kind": "dataset"}, files={"file": ("wrong.npz", buf.getvalue())}
    ).json()["id"]
    body = {"name": "job", "model": ids["model"], "config": {"compression": {"algorithm": "quantization"}}}
    refused = client.post("/v1/jobs", headers=headers, json={**body, "train_data": wrong, "val_data": ids["val"]})
    assert refused.status_code == 422
    assert refused.json()["detail"] == "train_data: samples have shape (32,), the model takes (64,)"

    # an archive whose layout the API cannot read has no recorded shapes: the worker's own check decides
    with app.state.sessions() as session:
        session.get(Artifact, ids["model"]).meta = None
        session.commit()
    job_id = submit(client, headers, {**ids, "train": wrong}, {"compression": {"algorithm": "quantization"}})
    assert execute_job(job_id, app.state.sessions, app.state.store, tmp_path / "work") == "failed"
    job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    assert job["status"] == "failed" and "train_data: samples have shape (32,), the model takes (64,)" in job["error"]
    exports = client.get(f"/v1/jobs/{job_id}/artifacts", headers=headers).json()
    assert [e["kind"] for e in exports] == ["log"]  # a failed job still has its log


def test_a_cancelled_queued_job_is_not_run(service):
    app, client, headers, ids, _, tmp_path = service
    job_id = submit(client, headers, ids, {"compression": {"algorithm": "quantization"}})
    client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    assert execute_job(job_id, app.state.sessions, app.state.store, tmp_path / "work") == "skipped"
    assert client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"] == "cancelled"


def test_a_diverging_loss_fails_the_job_and_keeps_its_best_earlier_model(service):
    """lr 10 used to end in "the job process sent an invalid message ... loss must be finite", with nothing
    kept; now the job says the loss diverged and what to change, and exports the epoch before it."""
    app, client, headers, _, _, tmp_path = service
    (tmp_path / "trained").mkdir()
    ids = upload_digits_job_inputs(client, headers, tmp_path / "trained", trained=True)  # a small first loss
    recipe = {"epochs": 3, "lr": 10.0, "optimizer": "sgd", "momentum": 0.9}
    job_id = submit(client, headers, ids, {"compression": {"algorithm": "quantization"}}, recipe)
    assert execute_job(job_id, app.state.sessions, app.state.store, tmp_path / "work") == "failed"
    job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    assert job["error"].startswith("loss diverged at epoch 1 (loss="), job["error"]
    assert "lower the learning rate (recipe.lr is 10; try 1)" in job["error"]
    assert any("the exported model is epoch 0's" in w for w in job["result"]["warnings"]), job["result"]
    exports = {e["kind"] for e in client.get(f"/v1/jobs/{job_id}/artifacts", headers=headers).json()}
    assert {"onnx", "stripped", "log"} <= exports
    onnx = client.get(f"/v1/jobs/{job_id}/artifacts/onnx", headers=headers)
    session = ort.InferenceSession(onnx.content, providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 64), np.float32)})[0]
    assert np.isfinite(out).all()  # the kept model, not the diverged one
