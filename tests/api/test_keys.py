"""Keys as the API sees them: a revoked key is refused at once and its requests change nothing; wrong keys
from one address are refused before any database work; with `rate_limit_storage=redis://...` several API
processes count together (a real Redis)."""

from __future__ import annotations

import contextlib
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from squeezer.api import create_app
from squeezer.api.keys import find_key, revoke_key
from squeezer.db import Artifact, Job
from squeezer.settings import Settings
from tests.api.test_api import CONFIG, npz_bytes, upload
from tests.helpers import RecordingQueue, api_client, app_with_two_keys


@contextlib.contextmanager
def counted_queries(engine):
    """The SQL statements sent to the database meanwhile (a list that fills while the block runs)."""
    sent: list[str] = []

    def count(_conn, _cursor, statement, *_):
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", count)


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


def test_a_revoked_key_is_refused_at_once_and_its_requests_change_nothing(tmp_path):
    api = api_client(tmp_path)
    data = upload(api, api.alice, "dataset", "d.npz", npz_bytes()).json()
    secret = api.alice["Authorization"].removeprefix("Bearer ")
    with api.app.state.sessions() as session:
        assert revoke_key(session, find_key(session, secret))
    listed = api.get("/v1/jobs", headers=api.alice)
    assert listed.status_code == 401 and listed.json()["detail"] == "unknown or revoked API key"
    other = npz_bytes() + b"\0"  # new bytes: an upload that got through would add a file
    assert upload(api, api.alice, "dataset", "e.npz", other).status_code == 401
    body = {"name": "x", "model": data["id"], "config": CONFIG, "train_data": data["id"], "val_data": data["id"]}
    assert api.post("/v1/jobs", headers=api.alice, json=body).status_code == 401
    with api.app.state.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(Artifact)) == 1
    assert [p.name for p in api.app.state.store.root.rglob("*") if p.is_file()] == [data["sha256"]]
    assert api.app.state.queue.jobs == []
    assert api.get("/v1/jobs", headers=api.bob).status_code == 200  # the other keys are untouched


def test_wrong_keys_from_one_address_are_refused_before_any_database_work(tmp_path):
    """After `auth_failure_limit` wrong keys, the address gets 429, whatever key it sends next: telling a right
    key apart would take the lookup that the limit spares the database (and would confirm a guess)."""
    app, _, alice, _ = app_with_two_keys(tmp_path, auth_failure_limit="3/minute")
    guesser, neighbour = TestClient(app, client=("203.0.113.7", 4000)), TestClient(app, client=("203.0.113.8", 4000))
    for guess in range(3):
        wrong = guesser.get("/v1/jobs", headers=bearer(f"sq_guess{guess}"))
        assert wrong.status_code == 401 and wrong.json()["detail"] == "unknown or revoked API key"
    with counted_queries(app.state.engine) as sent:
        refused = guesser.get("/v1/jobs", headers=bearer("sq_guess3"))
        right = guesser.post(
            "/v1/artifacts", headers=bearer(alice), data={"kind": "dataset"}, files={"file": ("d.npz", npz_bytes())}
        )
    assert refused.status_code == right.status_code == 429
    assert "too many failed authentications from this address (limit 3/minute)" in refused.json()["detail"]
    assert 1 <= int(right.headers["retry-after"]) <= 60
    assert sent == []  # not one query: the key was not even looked up
    assert not [p for p in app.state.store.root.rglob("*") if p.is_file()]  # and nothing was stored
    assert neighbour.get("/v1/jobs", headers=bearer(alice)).status_code == 200  # the limit is per address
    for _ in range(5):  # no key at all guesses nothing and costs no query: not counted
        assert neighbour.get("/v1/jobs").status_code == 401
    assert neighbour.get("/v1/jobs", headers=bearer(alice)).status_code == 200


def test_api_processes_sharing_a_redis_storage_share_their_counts(tmp_path, redis_server):
    """Two apps on one database and one Redis, as compose's API processes: a budget spent on one is spent."""
    shared = {"rate_limit": "3/minute", "auth_failure_limit": "2/minute", "rate_limit_storage": redis_server.url}
    first, _, alice, _ = app_with_two_keys(tmp_path, **shared)
    second = create_app(Settings(home=tmp_path, **shared), queue=RecordingQueue())
    address = (f"2001:db8::{uuid.uuid4().hex[:4]}", 4000)  # a fresh address: the session's Redis outlives this test
    one, two = TestClient(first, client=address), TestClient(second, client=address)
    for _ in range(3):
        assert one.get("/v1/jobs", headers=bearer(alice)).status_code == 200
    limited = two.get("/v1/jobs", headers=bearer(alice))
    assert limited.status_code == 429 and "rate limit of 3/minute" in limited.json()["detail"]

    guesser = (f"2001:db8::{uuid.uuid4().hex[:4]}", 4000)
    guessing, elsewhere = TestClient(first, client=guesser), TestClient(second, client=guesser)
    for guess in range(2):
        assert guessing.get("/v1/jobs", headers=bearer(f"sq_guess{guess}")).status_code == 401
    assert elsewhere.get("/v1/jobs", headers=bearer("sq_guess2")).status_code == 429
    second.state.engine.dispose()
