"""Post-training quantization jobs (recipe mode "ptq") through the API and the worker's job process:
calibration samples without labels, no training epochs, the same verified exports and latency report;
accuracy control with validation data; and what is refused at submit."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from squeezer.api import create_app
from squeezer.api.keys import create_key
from squeezer.db import Export, Job, JobMetric
from squeezer.db.migrate import upgrade
from squeezer.settings import Settings
from squeezer.worker.execute import execute_job
from tests.helpers import RecordingQueue, write_digits_job_files


def _upload(client, headers, path, kind):
    response = client.post(
        "/v1/artifacts", headers=headers, data={"kind": kind}, files={"file": (path.name, path.read_bytes())}
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture
def service(tmp_path):
    settings = Settings(home=tmp_path)
    upgrade(settings.resolved_database_url())
    app = create_app(settings, queue=RecordingQueue())
    with app.state.sessions() as session:
        _, secret = create_key(session, "tests")
    client = TestClient(app)
    headers = {"Authorization": f"Bearer {secret}"}
    paths = write_digits_job_files(tmp_path, trained=True)
    with np.load(paths["train"]) as train:
        np.savez(tmp_path / "calibration.npz", x=train["x"][:300])  # features only: no labels
    ids = {name: _upload(client, headers, paths[name], "dataset") for name in ("train", "val")}
    ids["model"] = _upload(client, headers, paths["model"], "model")
    ids["calibration"] = _upload(client, headers, tmp_path / "calibration.npz", "dataset")
    return app, client, headers, ids, tmp_path


def _submit(client, headers, body):
    return client.post("/v1/jobs", headers=headers, json={"name": "ptq", **body})


def test_ptq_job_needs_no_labels_and_no_training(service):
    app, client, headers, ids, tmp_path = service
    response = _submit(
        client, headers, {"model": ids["model"], "train_data": ids["calibration"], "recipe": {"mode": "ptq"}}
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert response.json()["total_epochs"] == 0
    assert execute_job(job_id, app.state.sessions, app.state.store, tmp_path / "work") == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
    assert job["status"] == "succeeded"
    with app.state.sessions() as session:
        row = session.get(Job, job_id)
        post_training = row.result["statistics"]["post_training"]
        assert post_training["samples"] >= 300 and post_training["bias_corrected_layers"] == 3
        assert row.result["metric"] is None and row.result["latency"]["onnxruntime"]["speedup"] > 0
        assert session.query(JobMetric).filter_by(job_id=job_id).count() == 0  # no epochs, no metric rows
        kinds = {e.kind for e in session.query(Export).filter_by(job_id=job_id)}
    assert {"onnx", "stripped", "log"} <= kinds
    onnx_file = client.get(f"/v1/jobs/{job_id}/artifacts/onnx", headers=headers)
    assert onnx_file.status_code == 200
    session = ort.InferenceSession(onnx_file.content, providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: np.zeros((2, 64), np.float32)})[0].shape == (2, 10)


def test_ptq_job_with_accuracy_control_reports_the_fp32_layers(service):
    app, client, headers, ids, tmp_path = service
    body = {
        "model": ids["model"],
        "train_data": ids["calibration"],
        "val_data": ids["val"],
        "recipe": {"mode": "ptq", "max_drop": 0.0},  # not one validation sample may change
    }
    response = _submit(client, headers, body)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert execute_job(job_id, app.state.sessions, app.state.store, tmp_path / "work") == "succeeded"
    with app.state.sessions() as session:
        result = session.get(Job, job_id).result
    control = result["statistics"]["post_training"]["accuracy_control"]
    assert result["uncompressed_metric"] - result["metric"] <= 0.0 + 1e-9
    assert control["validations"] >= 2 and control["drop"] <= 0.0 + 1e-9
    assert all(layer["reason"] for layer in control["fp32_layers"])
    metrics = client.get(f"/v1/jobs/{job_id}/metrics", headers=headers).json()
    assert [m["epoch"] for m in metrics] == [0] and metrics[0]["metric"] == result["metric"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"recipe": {"mode": "ptq", "max_drop": 1.0}}, 422, "val_data is required with recipe.max_drop"),
        ({"recipe": {"max_drop": 1.0}}, 422, "max_drop applies to mode 'ptq'"),
        (
            {"recipe": {"mode": "train"}, "config": {"compression": {"algorithm": "quantization"}}},
            422,
            "val_data is required",
        ),
        (
            {"recipe": {"mode": "ptq"}, "config": {"compression": {"algorithm": "magnitude_sparsity"}}},
            422,
            "quantizes only; the config also asks for magnitude_sparsity",
        ),
        ({"recipe": {"mode": "ptq"}, "config": {"target_device": "TRIAL"}}, 422, "not a post-training target"),
    ],
    ids=["max_drop-without-val", "max_drop-in-train", "train-without-val", "ptq-with-sparsity", "trial-device"],
)
def test_ptq_submissions_that_cannot_run_are_refused(service, body, status, message):
    _, client, headers, ids, _ = service
    response = _submit(client, headers, {"model": ids["model"], "train_data": ids["calibration"], **body})
    assert response.status_code == status, response.text
    assert message in response.text


def test_calibration_data_without_labels_cannot_train(service):
    _, client, headers, ids, _ = service
    body = {
        "model": ids["model"],
        "train_data": ids["calibration"],
        "val_data": ids["val"],
        "config": {"compression": {"algorithm": "quantization"}},
    }
    response = _submit(client, headers, body)
    assert response.status_code == 422
    assert "has no labels" in response.json()["detail"]


def test_calibration_samples_of_the_wrong_shape_are_refused_at_submit(service):
    _, client, headers, ids, tmp_path = service
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((10, 32), np.float32))
    response = client.post(
        "/v1/artifacts", headers=headers, data={"kind": "dataset"}, files={"file": ("bad.npz", buffer.getvalue())}
    )
    bad = response.json()["id"]
    response = _submit(client, headers, {"model": ids["model"], "train_data": bad, "recipe": {"mode": "ptq"}})
    assert response.status_code == 422
    assert "samples have shape (32,), the model takes (64,)" in response.json()["detail"]


def test_a_search_recommends_its_post_training_candidate_and_counts_the_epochs_saved(service):
    app, client, headers, ids, tmp_path = service
    trains_two_epochs = {  # 4-bit weights (stored in int8: the same file size) and no drop allowed: it trains
        "name": "qat",
        "config": {
            "compression": {"algorithm": "quantization", "weights": {"bits": 4}},
            "accuracy_aware_training": {
                "mode": "early_exit",
                "params": {"maximal_absolute_accuracy_degradation": 0.0, "maximal_total_epochs": 2},
            },
        },
    }
    body = {
        "name": "ptq-first",
        "model": ids["model"],
        "train_data": ids["train"],
        "val_data": ids["val"],
        "accuracy": {"maximal_absolute_accuracy_degradation": 5.0},
        "candidates": ["ptq", trains_two_epochs],
        "objective": "size",
        "early_stopping": False,
        "recipe": {"lr": 1e-3},
    }
    created = client.post("/v1/searches", headers=headers, json=body)
    assert created.status_code == 201, created.text
    search = created.json()
    for candidate in search["result"]["candidates"]:
        assert execute_job(candidate["job_id"], app.state.sessions, app.state.store, tmp_path / "work") == "succeeded"
    result = client.get(f"/v1/searches/{search['id']}", headers=headers).json()["result"]
    outcomes = {c["name"]: c for c in result["candidates"]}
    assert outcomes["ptq"]["epochs"] == 0 and outcomes["qat"]["epochs"] == 2, (result["fp32_metric"], outcomes)
    assert outcomes["ptq"]["within_budget"]
    assert result["recommended"] == "ptq"
    assert (
        "ptq needed no training; the trained candidates within the budget took 2 epochs"
        in (result["recommendation_note"])
    )
