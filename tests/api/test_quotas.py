"""Quotas hold under concurrency: many requests of one key at the same moment, on a live server over a real
SQLite and a real PostgreSQL, never leave more than the quota allows."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select

from squeezer.db import Artifact, Job
from tests.api.test_api import CONFIG, npz_bytes, pt2_bytes
from tests.helpers import app_with_two_keys, live_server

REQUESTS, QUOTA = 20, 5


@pytest.fixture
def serve(tmp_path, database_url):
    """serve(**settings): a live API on the database under test; yields (app, url, alice's headers)."""
    apps = []

    def start(**settings):
        app, _, alice, _ = app_with_two_keys(tmp_path, database_url=database_url, **settings)
        apps.append(app)
        return app, {"Authorization": f"Bearer {alice}"}

    yield start
    for app in apps:
        app.state.engine.dispose()


def at_once(url, headers, send):
    """`send(client, i)` for i in range(REQUESTS), from as many threads released together; the statuses."""
    barrier = threading.Barrier(REQUESTS)

    def one(i):
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            barrier.wait()
            return send(client, i).status_code

    with ThreadPoolExecutor(REQUESTS) as pool:
        return sorted(pool.map(one, range(REQUESTS)))


def upload(client, kind, name, data):
    return client.post("/v1/artifacts", data={"kind": kind}, files={"file": (name, data)})


def test_concurrent_submissions_stop_at_the_job_quota(serve, tmp_path):
    app, headers = serve(max_active_jobs_per_key=QUOTA)
    with live_server(app) as url, httpx.Client(base_url=url, headers=headers) as client:
        model = upload(client, "model", "m.pt2", pt2_bytes(tmp_path)).json()["id"]
        data = upload(client, "dataset", "d.npz", npz_bytes()).json()["id"]
        body = {"name": "j", "model": model, "config": CONFIG, "train_data": data, "val_data": data}
        statuses = at_once(url, headers, lambda c, i: c.post("/v1/jobs", json=body))
    assert statuses == [201] * QUOTA + [429] * (REQUESTS - QUOTA)
    with app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == QUOTA


def _dataset(i):
    buf = io.BytesIO()
    np.savez(buf, x=np.full((64, 64), i, np.float32), y=np.zeros(64, np.int64))
    return buf.getvalue()


def test_concurrent_uploads_stop_at_the_storage_quota(serve):
    files = [_dataset(i) for i in range(REQUESTS)]
    size = len(files[0])
    assert {len(f) for f in files} == {size}  # different bytes, the same size: any QUOTA of them fit
    app, headers = serve(max_storage_bytes_per_key=QUOTA * size + size // 2)
    with live_server(app) as url:
        statuses = at_once(url, headers, lambda c, i: upload(c, "dataset", f"d{i}.npz", files[i]))
    assert statuses == [201] * QUOTA + [429] * (REQUESTS - QUOTA)
    with app.state.sessions() as session:
        assert session.scalar(select(func.sum(Artifact.size_bytes))) == QUOTA * size
    assert len([p for p in app.state.store.root.rglob("*") if p.is_file()]) == QUOTA  # the refused ones are gone
