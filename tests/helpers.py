"""Helpers shared by the tests that run jobs through the API: real inputs, and waiting for a result."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import torch
import uvicorn

from squeezer.examples.digits import digits_tensors
from squeezer.examples.models import MLP


def write_digits_job_files(folder, trained=False):
    """An MLP as a .pt2 archive and digits train/val .npz files on disk; returns their paths. `trained`:
    the MLP is fitted to the training part first (a few seconds), so its metric is a real accuracy."""
    torch.manual_seed(0)
    x, y = digits_tensors(image_size=None)
    model = MLP(hidden=32)
    if trained:
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(150):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[:1200]), y[:1200]).backward()
            optimizer.step()
    program = torch.export.export(
        model.eval(), (torch.rand(2, 64),), dynamic_shapes=({0: torch.export.Dim("b", min=1)},)
    )
    paths = {"model": folder / "m.pt2", "train": folder / "train.npz", "val": folder / "val.npz"}
    torch.export.save(program, paths["model"])
    for name, sl in (("train", slice(0, 1200)), ("val", slice(1200, None))):
        np.savez(paths[name], x=x[sl].numpy(), y=y[sl].numpy())
    return paths


def upload_digits_job_inputs(client, headers, tmp_path, trained=False):
    """The files of `write_digits_job_files`, uploaded; returns their artifact ids."""
    paths = write_digits_job_files(tmp_path, trained)
    ids = {}
    for name, kind in (("train", "dataset"), ("val", "dataset"), ("model", "model")):
        response = client.post(
            "/v1/artifacts",
            headers=headers,
            data={"kind": kind},
            files={"file": (paths[name].name, paths[name].read_bytes())},
        )
        ids[name] = response.json()["id"]
    return ids


def read_tensorboard_zip(archive, folder):
    """tag -> [(step, value)] of the event files in a `tensorboard` export, loaded by TensorBoard's own reader
    as `tensorboard --logdir` loads the unzipped folder."""
    import zipfile

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with zipfile.ZipFile(archive) as zf:
        zf.extractall(folder)
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def wait_for_job(client, headers, job_id, timeout=180.0):
    """Poll until the job succeeded or failed (or the timeout passed); returns the last status."""
    deadline = time.monotonic() + timeout
    status = "queued"
    while status not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"]
    return status


class RecordingQueue:
    """A `JobQueue` that keeps what it was given: for tests that run jobs by hand, or not at all."""

    def __init__(self, reachable=True):
        self.jobs = []
        self.reachable = reachable

    def enqueue(self, job_id, priority):
        self.jobs.append((job_id, priority))

    def ping(self):
        if not self.reachable:
            raise ConnectionError("broker down (test)")


@contextlib.contextmanager
def live_server(app):
    """Serve `app` with uvicorn on a free loopback port in a thread; yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def api_client(tmp_path, **settings):
    """A TestClient on `app_with_two_keys`: `.app`, `.queued` (what reached the queue), and the
    `.alice` / `.bob` authorization headers."""
    from fastapi.testclient import TestClient

    app, queue, alice, bob = app_with_two_keys(tmp_path, **settings)
    client = TestClient(app)
    client.queued = queue.jobs
    client.alice = {"Authorization": f"Bearer {alice}"}
    client.bob = {"Authorization": f"Bearer {bob}"}
    return client


def tiny_bert(vocab_size=128, num_labels=4):
    """A random-init two-layer Hugging Face BERT classifier, in eval mode (token-id models in tests)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config).eval()


def app_with_two_keys(tmp_path, **settings):
    """A migrated API on a real SQLite database and store, a recording queue, and keys for alice and bob."""
    from squeezer.api import create_app
    from squeezer.api.keys import create_key
    from squeezer.db.migrate import upgrade
    from squeezer.settings import Settings

    config = Settings(home=tmp_path, **settings)
    upgrade(config.resolved_database_url())
    queue = RecordingQueue()
    app = create_app(config, queue=queue)
    with app.state.sessions() as session:
        _, alice = create_key(session, "alice")
        _, bob = create_key(session, "bob")
    return app, queue, alice, bob
