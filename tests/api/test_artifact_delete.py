"""DELETE /v1/artifacts/{id}, on SQLite and PostgreSQL: it frees the key's storage quota, never takes an
artifact from a queued or running job, and removes the stored file only with the last row of those bytes
(uploads are content-addressed, so two keys that upload the same bytes share one file)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from sqlalchemy import delete, func, select

from squeezer.db import Artifact, Job
from tests.api.test_api import CONFIG, npz_bytes, pt2_bytes, upload
from tests.helpers import api_client
from tests.worker.test_transitions import just_before


@pytest.fixture
def make_api(tmp_path, database_url):
    clients = []

    def make(**settings):
        clients.append(api_client(tmp_path, database_url=database_url, **settings))
        return clients[-1]

    yield make
    for client in clients:
        client.app.state.engine.dispose()


@pytest.fixture
def api(make_api):
    return make_api()


def stored_files(api):
    return {p.name for p in api.app.state.store.root.rglob("*") if p.is_file()}


def _dataset(value):
    buf = io.BytesIO()
    np.savez(buf, x=np.full((16, 64), value, np.float32), y=np.zeros(16, np.int64))
    return buf.getvalue()


def test_delete_removes_the_artifact_and_its_file(api):
    data = upload(api, api.alice, "dataset", "d.npz", npz_bytes()).json()
    assert api.delete(f"/v1/artifacts/{data['id']}", headers=api.alice).status_code == 204
    assert api.get(f"/v1/artifacts/{data['id']}", headers=api.alice).status_code == 404
    assert stored_files(api) == set()
    assert api.delete(f"/v1/artifacts/{data['id']}", headers=api.alice).status_code == 404


def test_another_keys_artifact_cannot_be_deleted(api):
    data = upload(api, api.alice, "dataset", "d.npz", npz_bytes()).json()
    gone = api.delete(f"/v1/artifacts/{data['id']}", headers=api.bob)
    assert gone.status_code == 404 and gone.json()["detail"] == f"no artifact {data['id']!r}"
    assert api.get(f"/v1/artifacts/{data['id']}", headers=api.alice).status_code == 200
    assert stored_files(api) == {data["sha256"]}


def test_the_file_stays_while_another_key_has_the_same_bytes(api):
    alices = upload(api, api.alice, "dataset", "d.npz", npz_bytes()).json()
    bobs = upload(api, api.bob, "dataset", "mine.npz", npz_bytes()).json()
    assert api.delete(f"/v1/artifacts/{alices['id']}", headers=api.alice).status_code == 204
    assert stored_files(api) == {bobs["sha256"]}  # bob's artifact is still readable by his jobs
    assert api.delete(f"/v1/artifacts/{bobs['id']}", headers=api.bob).status_code == 204
    assert stored_files(api) == set()


def test_a_live_job_keeps_its_artifacts_and_a_finished_one_lets_them_go(api, tmp_path):
    model = upload(api, api.alice, "model", "m.pt2", pt2_bytes(tmp_path)).json()
    data = upload(api, api.alice, "dataset", "d.npz", npz_bytes()).json()
    body = {"name": "j", "model": model["id"], "config": CONFIG, "train_data": data["id"], "val_data": data["id"]}
    job = api.post("/v1/jobs", headers=api.alice, json=body).json()
    for artifact in (model, data):
        refused = api.delete(f"/v1/artifacts/{artifact['id']}", headers=api.alice)
        assert refused.status_code == 409
        assert refused.json()["detail"].startswith(f"job {job['id']} (queued) uses artifact {artifact['id']}")
    assert stored_files(api) == {model["sha256"], data["sha256"]}
    api.post(f"/v1/jobs/{job['id']}/cancel", headers=api.alice)
    assert api.delete(f"/v1/artifacts/{model['id']}", headers=api.alice).status_code == 204
    # the finished job keeps its record; its spec names an artifact that is gone (it cannot run again anyway)
    assert api.get(f"/v1/jobs/{job['id']}/spec", headers=api.alice).json()["model"] == model["id"]
    again = api.post("/v1/jobs", headers=api.alice, json=body)
    assert again.status_code == 404 and again.json()["detail"] == f"no artifact {model['id']!r}"


def test_delete_frees_the_storage_quota(make_api):
    first, second = _dataset(1), _dataset(2)
    api = make_api(max_storage_bytes_per_key=len(first) + len(second) // 2)
    kept = upload(api, api.alice, "dataset", "a.npz", first).json()
    assert upload(api, api.alice, "dataset", "b.npz", second).status_code == 429
    assert api.delete(f"/v1/artifacts/{kept['id']}", headers=api.alice).status_code == 204
    assert upload(api, api.alice, "dataset", "b.npz", second).status_code == 201


def test_a_job_submitted_while_its_artifact_is_deleted_is_refused(api, tmp_path):
    """The delete commits between the submit's checks and its insert: the insert, with the key locked, sees
    it, so no queued job names a deleted artifact (the worker would find no file)."""
    model = upload(api, api.alice, "model", "m.pt2", pt2_bytes(tmp_path)).json()
    data = upload(api, api.alice, "dataset", "d.npz", npz_bytes()).json()
    body = {"name": "j", "model": model["id"], "config": CONFIG, "train_data": data["id"], "val_data": data["id"]}

    def delete_the_data(session):
        session.execute(delete(Artifact).where(Artifact.id == data["id"]))
        session.commit()

    with just_before(api.app.state.sessions, "UPDATE api_key", delete_the_data):
        refused = api.post("/v1/jobs", headers=api.alice, json=body)
    assert refused.status_code == 404 and refused.json()["path"] == "$.train_data"
    with api.app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_an_upload_racing_the_delete_of_the_same_bytes_keeps_its_file(api):
    """Alice deletes the last artifact of some bytes (and their file) while Bob uploads the same bytes: Bob's
    artifact is committed with its file in place, whichever commits first."""
    alices = upload(api, api.alice, "dataset", "d.npz", npz_bytes()).json()

    def alice_deletes(_session):
        return api.delete(f"/v1/artifacts/{alices['id']}", headers=api.alice).status_code

    with just_before(api.app.state.sessions, "UPDATE api_key", alice_deletes) as done:
        bobs = upload(api, api.bob, "dataset", "d.npz", npz_bytes())
    assert done == [204] and bobs.status_code == 201
    with api.app.state.sessions() as session:
        stored = session.get(Artifact, bobs.json()["id"]).storage_path
    assert api.app.state.store.path(stored).read_bytes() == npz_bytes()
