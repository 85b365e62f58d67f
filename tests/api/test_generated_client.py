"""A client generated from the OpenAPI document (openapi-python-client, as a user would make one) works
against the real API: it uploads, submits, lists, fetches and cancels, and every error it meets, request
validation included, comes back parsed as the document's `Problem` rather than crashing the client."""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from squeezer.api.app import openapi_document
from tests.api.test_api import CONFIG, npz_bytes, pt2_bytes
from tests.helpers import app_with_two_keys, live_server

PACKAGE = "squeezer_client"  # from the document's title


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The generated package, imported; removed from `sys.path` and `sys.modules` afterwards."""
    folder = tmp_path_factory.mktemp("generated")
    (folder / "openapi.json").write_text(json.dumps(openapi_document()))
    (folder / "config.json").write_text(json.dumps({"post_hooks": []}))  # its hooks only run ruff over the code
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "openapi-python-client"),
            *("generate", "--path", str(folder / "openapi.json"), "--output-path", str(folder / "out")),
            *("--config", str(folder / "config.json")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout  # no part of the document was skipped
    sys.path.insert(0, str(folder / "out"))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder / "out"))
        for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.fixture
def api_url(tmp_path):
    app, _queue, alice, _bob = app_with_two_keys(tmp_path)
    with live_server(app) as url:
        yield url, alice
    app.state.engine.dispose()


def test_a_generated_client_works_and_parses_every_problem(generated, api_url, tmp_path):
    from squeezer_client.api.artifacts import artifacts_create, artifacts_get
    from squeezer_client.api.exports import exports_list
    from squeezer_client.api.jobs import jobs_cancel, jobs_create, jobs_delete, jobs_get, jobs_list
    from squeezer_client.models import BodyArtifactsCreate, BodyArtifactsCreateKind, JobCreate, Problem
    from squeezer_client.types import File

    url, alice = api_url
    # raise_on_unexpected_status: an answer that the document does not declare fails the test
    with (
        generated.AuthenticatedClient(base_url=url, token=alice, raise_on_unexpected_status=True) as client,
        generated.AuthenticatedClient(base_url=url, token="sq_wrong", raise_on_unexpected_status=True) as stranger,
    ):

        def upload(kind, name, data):
            file = File(payload=io.BytesIO(data), file_name=name)
            return artifacts_create.sync(
                client=client, body=BodyArtifactsCreate(file=file, kind=BodyArtifactsCreateKind(kind))
            )

        model, data = upload("model", "m.pt2", pt2_bytes(tmp_path)), upload("dataset", "d.npz", npz_bytes())
        assert model.kind == "model" and len(model.sha256) == 64 and data.filename == "d.npz"
        assert artifacts_get.sync(model.id, client=client).sha256 == model.sha256

        body = {"name": "int8", "model": model.id, "config": CONFIG, "train_data": data.id, "val_data": data.id}
        job = jobs_create.sync(client=client, body=JobCreate.from_dict(body))
        assert job.status == "queued" and job.total_epochs == 4
        page = jobs_list.sync(client=client)
        assert page.total == 1 and page.items[0].id == job.id
        assert jobs_get.sync(job.id, client=client).name == "int8"
        assert exports_list.sync(job.id, client=client) == []
        assert jobs_cancel.sync(job.id, client=client).status == "cancelled"

        bad = {**body, "config": {"compression": {"algorithm": "quantization", "weights": {"bits": 12}}}}
        problems = {
            "cancel again": (jobs_cancel.sync(job.id, client=client), 409),
            "bad config": (jobs_create.sync(client=client, body=JobCreate.from_dict(bad)), 422),
            "bad query": (jobs_list.sync(client=client, limit=0), 422),  # FastAPI's own request validation
            "unknown key": (jobs_list.sync(client=stranger), 401),
        }
        assert jobs_delete.sync_detailed(job.id, client=client).status_code == 204
        problems["deleted"] = (jobs_get.sync(job.id, client=client), 404)
    for what, (problem, status) in problems.items():
        assert isinstance(problem, Problem) and problem.status == status and problem.detail, what
    assert problems["bad config"][0]["path"] == "$.compression.weights.bits"  # extra members are kept
    assert problems["bad query"][0]["errors"][0]["path"] == "$.query.limit"


def test_the_sample_configs_need_no_key_in_the_generated_client(generated, api_url):
    from squeezer_client.api.sample_configs import sample_configs_get, sample_configs_list

    url, _ = api_url
    with generated.Client(base_url=url, raise_on_unexpected_status=True) as client:  # no key at all
        assert "int8" in [s.name for s in sample_configs_list.sync(client=client)]
        sample = sample_configs_get.sync("int8_early_exit.json", client=client)  # the file's name works too
    assert sample.name == "int8_early_exit" and sample.file == "int8_early_exit.json"
