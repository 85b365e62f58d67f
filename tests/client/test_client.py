"""The SDK against a live API server (uvicorn on loopback, real SQLite and store): compress -> wait ->
download, its error classes, and which requests it retries."""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading

import fastapi.routing
import onnxruntime as ort
import pytest
import torch

from squeezer.client import (
    AuthenticationError,
    Client,
    ClientError,
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ServerError,
    ServiceUnavailable,
    wait_ready,
)
from squeezer.examples.digits import digits_tensors
from squeezer.examples.models import MLP
from squeezer.worker.execute import execute_job
from tests.api.test_api import CONFIG, npz_bytes, pt2_bytes
from tests.helpers import app_with_two_keys, live_server


@pytest.fixture
def service(tmp_path):
    app, queue, alice, bob = app_with_two_keys(tmp_path, max_upload_bytes=2_000_000)
    with live_server(app) as url, Client(url, alice, backoff_s=0.01) as client, Client(url, bob) as other:
        yield app, queue, client, other


def test_compress_wait_and_download(service, tmp_path, monkeypatch):
    app, queue, client, other = service
    monkeypatch.setattr(fastapi.routing, "_PING_INTERVAL", 0.05)  # keep-alives between events, as on long jobs
    torch.manual_seed(0)
    x, y = digits_tensors(image_size=None)
    job = client.compress(
        MLP(hidden=32),
        x[:1],  # a batch of one: the archive still gets a dynamic batch dimension
        {"compression": {"algorithm": "quantization"}},
        (x[:1200], y[:1200]),
        (x[1200:].numpy(), y[1200:].numpy()),
        {"epochs": 2, "lr": 3e-3},
        name="mlp",
    )
    assert job.status == "queued" and job.total_epochs == 2 and queue.jobs == [(job.id, 0)]
    worker = threading.Thread(target=execute_job, args=(job.id, app.state.sessions, app.state.store, tmp_path / "w"))
    worker.start()
    done = client.jobs.wait(job, timeout=120)  # follows the live event stream while the job runs
    worker.join()
    assert done.status == "succeeded" and done.epoch == 2 and done.finished_at is not None
    assert [m.epoch for m in client.jobs.metrics(job)] == [0, 1, 2]
    events = list(client.jobs.events(job))
    assert [e.event for e in events] == ["metric", "metric", "metric", "job", "end"]
    assert events[-2].job.status == "succeeded" and events[0].metric.epoch == 0

    path = client.jobs.download(done, "onnx", tmp_path)
    assert path.name == "mlp-model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x[1200:].numpy()})[0]
    onnx_accuracy = 100.0 * float((logits.argmax(1) == y[1200:].numpy()).mean())
    assert abs(onnx_accuracy - done.current_metric) <= 0.5
    assert {e.kind for e in client.jobs.exports(job)} >= {"onnx", "stripped", "checkpoint", "log"}
    assert client.jobs.list(status="succeeded").total == 1

    with pytest.raises(Conflict, match="already finished"):
        client.jobs.cancel(job)
    with pytest.raises(NotFound):
        other.jobs.get(job)  # another key's job does not exist for it
    with pytest.raises(NotFound, match="no 'weights' export"):
        client.jobs.download(job, "weights", tmp_path)


def test_quantize_runs_post_training_quantization_without_labels(service, tmp_path):
    app, queue, client, _ = service
    torch.manual_seed(0)
    x, y = digits_tensors(image_size=None)
    job = client.quantize(MLP(hidden=32), x[:1], x[:300], (x[1200:], y[1200:]), max_drop=100.0)
    assert job.status == "queued" and job.total_epochs == 0 and queue.jobs[-1] == (job.id, 0)
    assert execute_job(job.id, app.state.sessions, app.state.store, tmp_path / "w") == "succeeded"
    done = client.jobs.get(job)
    assert done.status == "succeeded" and done.result.statistics["post_training"]["samples"] >= 300
    assert done.result.statistics["post_training"]["accuracy_control"]["validations"] == 2  # within 100 points
    onnx = client.jobs.download(done, "onnx", tmp_path)
    session = ort.InferenceSession(str(onnx))
    assert session.run(None, {session.get_inputs()[0].name: x[:4].numpy()})[0].shape == (4, 10)
    with pytest.raises(ValueError, match="max_drop needs val_data"):
        client.quantize(MLP(hidden=32), x[:1], x[:300], max_drop=1.0)
    with pytest.raises(InvalidInput, match=r"\$\.recipe\.model_type"):
        client.quantize(MLP(hidden=32), x[:1], x[:300], model_type="cnn")


def test_an_artifact_is_deleted_unless_a_live_job_uses_it(service, tmp_path):
    _, _, client, _ = service
    model = client.artifacts.upload(pt2_bytes(tmp_path), "model", filename="m.pt2")
    data = client.artifacts.upload(npz_bytes(), "dataset", filename="d.npz")
    job = client.jobs.create("j", model, CONFIG, data, data)
    with pytest.raises(Conflict, match=rf"job {job.id} \(queued\) uses artifact {model.id}"):
        client.artifacts.delete(model)
    client.jobs.cancel(job)
    client.artifacts.delete(model)
    with pytest.raises(NotFound):
        client.artifacts.get(model)


def test_each_failure_has_its_error_class(service, tmp_path, monkeypatch):
    _, _, client, _ = service
    with pytest.raises(AuthenticationError, match="unknown or revoked"), Client(client.url, "sq_not-a-key") as stranger:
        stranger.jobs.list()
    with pytest.raises(NotFound, match="no job 'nope'"):
        client.jobs.get("nope")
    with pytest.raises(PayloadTooLarge, match="2000000 bytes"):
        client.artifacts.upload(b"0" * 2_100_000, "dataset", filename="big.npz")
    with pytest.raises(InvalidInput, match=r"not a torch\.export archive"):
        client.artifacts.upload(b"not a zip", "model", filename="m.pt2")
    x, y = digits_tensors(image_size=None)
    with pytest.raises(InvalidInput) as bad_config:
        client.compress(
            MLP(hidden=8), x[:2], {"compression": {"algorithm": "quantisation"}}, (x[:8], y[:8]), (x[:8], y[:8])
        )
    assert bad_config.value.status == 422 and bad_config.value.path == "$.compression.algorithm"
    assert "quantization" in bad_config.value.detail  # the allowed values are named
    monkeypatch.setenv("SQUEEZER_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("SQUEEZER_API_KEY", raising=False)
    with pytest.raises(ClientError, match="SQUEEZER_API_KEY"):
        Client(client.url)


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first two requests, then 200: a real server that is briefly unavailable."""

    calls = 0

    def _answer(self):
        type(self).calls += 1
        status = 503 if type(self).calls <= 2 else 200
        body = json.dumps({"title": "Busy", "detail": "try later"} if status == 503 else {"items": []}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    _Flaky.calls = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_only_safe_requests_are_retried(flaky):
    with Client(flaky, "sq_key", backoff_s=0.01) as client:
        assert client.request("GET", "/v1/jobs").json() == {"items": []} and _Flaky.calls == 3
        _Flaky.calls = 0
        with pytest.raises(ServerError, match="503 Busy: try later"):
            client.request("POST", "/v1/jobs", json={})  # a POST may have done its work: never repeated
        assert _Flaky.calls == 1
    _Flaky.calls = 0
    with pytest.raises(ServerError), Client(flaky, "sq_key", retries=0) as impatient:
        impatient.request("GET", "/v1/jobs")


def test_an_unreachable_service_is_named():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    client = Client(f"http://127.0.0.1:{port}", "sq_key", retries=1, backoff_s=0.01)
    with pytest.raises(ServiceUnavailable, match=re.escape(f"127.0.0.1:{port}")), client:
        client.jobs.list()


def test_wait_ready_returns_once_ready_and_names_a_dead_service(service):
    _, _, client, _ = service
    wait_ready(client.url, timeout=10)  # a live API with its database and queue: returns at once
    with pytest.raises(ServiceUnavailable, match="stopped before it was ready"):
        wait_ready(client.url.replace(client.url.rsplit(":", 1)[1], "1"), timeout=10, alive=lambda: False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServiceUnavailable, match="not ready within 1 s"):
        wait_ready(f"http://127.0.0.1:{port}", timeout=1)
