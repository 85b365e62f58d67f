"""The REST API against a real SQLite database and file store: artifacts, jobs, isolation, errors."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from squeezer.examples.models import MLP
from tests.helpers import api_client, app_with_two_keys


@pytest.fixture
def api(tmp_path):
    return api_client(tmp_path, max_upload_bytes=200_000)


def pt2_bytes(tmp_path):
    program = torch.export.export(
        MLP().eval(), (torch.rand(2, 64),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)
    )
    torch.export.save(program, tmp_path / "m.pt2")
    return (tmp_path / "m.pt2").read_bytes()


def npz_bytes():
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((8, 64), np.float32), y=np.zeros(8, np.int64))
    return buf.getvalue()


def upload(client, headers, kind, name, data):
    return client.post("/v1/artifacts", headers=headers, data={"kind": kind}, files={"file": (name, data)})


@pytest.fixture
def artifacts(api, tmp_path):
    model = upload(api, api.alice, "model", "m.pt2", pt2_bytes(tmp_path)).json()
    data = upload(api, api.alice, "dataset", "d.npz", npz_bytes()).json()
    return model, data


CONFIG = {
    "compression": {"algorithm": "quantization"},
    "accuracy_aware_training": {
        "mode": "early_exit",
        "params": {"maximal_absolute_accuracy_degradation": 1, "maximal_total_epochs": 4},
    },
}


def test_health(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ok", "database": "ok", "broker": "ok"}
    api.app.state.queue.reachable = False
    down = api.get("/readyz")
    assert down.status_code == 503 and "broker unreachable" in down.json()["detail"]


def test_artifacts_are_content_addressed(api, artifacts, tmp_path):
    model, data = artifacts
    assert model["kind"] == "model" and len(model["sha256"]) == 64
    again = upload(api, api.alice, "model", "other-name.pt2", (tmp_path / "m.pt2").read_bytes()).json()
    assert again["id"] == model["id"]  # same bytes, same artifact
    assert api.get(f"/v1/artifacts/{data['id']}", headers=api.alice).json()["sha256"] == data["sha256"]


def test_job_lifecycle(api, artifacts):
    model, data = artifacts
    body = {
        "name": "int8",
        "model": model["id"],
        "config": CONFIG,
        "train_data": data["id"],
        "val_data": data["id"],
        "recipe": {"epochs": 2, "lr": 0.01},
        "priority": 5,
    }
    created = api.post("/v1/jobs", headers=api.alice, json=body)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "queued" and job["total_epochs"] == 4
    assert api.queued == [(job["id"], 5)]
    assert api.get(f"/v1/jobs/{job['id']}", headers=api.alice).json()["name"] == "int8"
    page = api.get("/v1/jobs?status=queued", headers=api.alice).json()
    assert page["total"] == 1 and page["items"][0]["id"] == job["id"]
    assert api.get("/v1/jobs?status=running", headers=api.alice).json()["total"] == 0
    assert api.get(f"/v1/jobs/{job['id']}/metrics", headers=api.alice).json() == []
    cancelled = api.post(f"/v1/jobs/{job['id']}/cancel", headers=api.alice)
    assert cancelled.json()["status"] == "cancelled"  # a queued job is cancelled at once
    assert api.post(f"/v1/jobs/{job['id']}/cancel", headers=api.alice).status_code == 409
    assert api.delete(f"/v1/jobs/{job['id']}", headers=api.alice).status_code == 204
    assert api.get(f"/v1/jobs/{job['id']}", headers=api.alice).status_code == 404


def test_another_keys_resources_do_not_exist(api, artifacts):
    model, data = artifacts
    body = {"name": "x", "model": model["id"], "config": CONFIG, "train_data": data["id"], "val_data": data["id"]}
    job = api.post("/v1/jobs", headers=api.alice, json=body).json()
    search_body = {k: body[k] for k in ("name", "model", "train_data", "val_data")}
    search = {"accuracy": {"maximal_absolute_accuracy_degradation": 1.0}, "candidates": ["int8"], **search_body}
    search_id = api.post("/v1/searches", headers=api.alice, json=search).json()["id"]
    ids = {"job_id": job["id"], "artifact_id": model["id"], "kind": "onnx", "search_id": search_id}
    walked = []
    for template, operations in api.app.openapi()["paths"].items():  # every documented route naming a resource
        if "{" not in template or template.startswith("/v1/sample-configs"):  # samples belong to no key
            continue
        for method in operations:
            response = api.request(method, template.format(**ids), headers=api.bob)
            assert response.status_code == 404, (method, template)
            assert response.headers["content-type"] == "application/problem+json"
            walked.append(f"{method} {template}")
    assert len(walked) == 14, walked
    assert api.get("/v1/jobs", headers=api.bob).json()["total"] == 0
    stolen = api.post("/v1/jobs", headers=api.bob, json=body)
    assert stolen.status_code == 404 and "no artifact" in stolen.json()["detail"]


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        (
            {"config": {"compression": {"algorithm": "quantization", "weights": {"bits": 12}}}},
            422,
            r"\$\.compression\.weights\.bits",
        ),
        ({"model": "missing"}, 404, "no artifact 'missing'"),
        ({"recipe": {"optimizer": "lion"}}, 422, r"\$\.recipe\.optimizer"),
        ({"priority": 11}, 422, r"\$\.priority"),
        ({"recipe": {"seed": 2**64}}, 422, r"\$\.recipe\.seed"),
        ({"surprise": 1}, 422, r"\$\.surprise"),
        # a misspelt section used to end `succeeded` with an uncompressed model
        ({"config": {"compresion": {"algorithm": "quantization"}}}, 422, r"did you mean 'compression' \(found"),
        ({"config": {"input_info": {"sample_size": [1, 64]}}}, 422, r"no 'compression' section"),
    ],
)
def test_bad_job_requests(api, artifacts, change, status, message):
    model, data = artifacts
    body = {"name": "x", "model": model["id"], "config": CONFIG, "train_data": data["id"], "val_data": data["id"]}
    response = api.post("/v1/jobs", headers=api.alice, json={**body, **change})
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["status"] == status

    assert re.search(message, problem["detail"] + json.dumps(problem.get("path", ""))), problem
    assert api.get("/v1/jobs", headers=api.alice).json()["total"] == 0  # nothing stored


def _npz(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"x": np.zeros((8, 32), np.float32), "y": np.zeros(8, np.int64)},
            r"samples have shape \(32,\), the model takes \(64,\)",
        ),
        ({"x": np.zeros((8, 64), np.float32), "y": np.arange(8) * 2}, r"labels must be in \[0, 9\], found \[0, 14\]"),
        ({"x": np.zeros((8, 64), np.float32), "y": np.zeros(8, np.float32)}, "must be a 1-D integer array"),
        ({"x": np.zeros((8, 64), np.float32), "y": -np.ones(8, np.int64)}, r"found \[-1, -1\]"),
    ],
)
def test_data_that_does_not_fit_the_model_is_refused_at_submit(api, artifacts, arrays, message):
    model, _ = artifacts
    bad = upload(api, api.alice, "dataset", "bad.npz", _npz(**arrays)).json()
    good = upload(api, api.alice, "dataset", "good.npz", npz_bytes()).json()
    body = {"name": "x", "model": model["id"], "config": CONFIG, "train_data": good["id"], "val_data": bad["id"]}
    response = api.post("/v1/jobs", headers=api.alice, json=body)
    assert response.status_code == 422 and response.json()["path"] == "$.val_data", response.text
    assert re.search(message, response.json()["detail"]) and response.json()["detail"].startswith("val_data: ")
    assert api.get("/v1/jobs", headers=api.alice).json()["total"] == 0 and api.queued == []


def test_regression_targets_must_match_the_model_output(api, artifacts):
    model, _ = artifacts
    targets = upload(
        api, api.alice, "dataset", "t.npz", _npz(x=np.zeros((8, 64), np.float32), y=np.zeros((8, 3)))
    ).json()
    body = {"name": "r", "model": model["id"], "config": CONFIG, "train_data": targets["id"], "val_data": targets["id"]}
    response = api.post("/v1/jobs", headers=api.alice, json={**body, "recipe": {"task": "regression"}})
    assert response.status_code == 422
    assert response.json()["detail"] == "train_data: regression targets have shape (3,), the model outputs (10,)"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_npz(x=np.array([{"os": "system"}], dtype=object), y=np.zeros(1, np.int64)), "not a readable"),  # a pickle
        # x alone is a calibration set (post-training jobs); without x nothing can feed the model
        (_npz(features=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64)), "must hold an array 'x'"),
        (_npz(x=np.zeros((4, 64), np.float32), y=np.zeros(3, np.int64)), "the same number of samples"),
        (b"PK\x03\x04 truncated", "not a readable"),
    ],
)
def test_unreadable_datasets_are_refused_at_upload(api, data, message):
    response = upload(api, api.alice, "dataset", "d.npz", data)
    assert response.status_code == 422 and message in response.json()["detail"], response.text
    assert not [p for p in api.app.state.store.root.rglob("*") if p.is_file()]  # nothing kept


def test_wrong_kind_bad_files_and_limits(api, artifacts):
    model, data = artifacts
    body = {"name": "x", "model": data["id"], "config": CONFIG, "train_data": data["id"], "val_data": data["id"]}
    wrong = api.post("/v1/jobs", headers=api.alice, json=body)
    assert wrong.status_code == 422 and "is a dataset, expected a model" in wrong.json()["detail"]
    not_zip = upload(api, api.alice, "model", "m.pt2", b"import os; os.system('boom')")
    assert not_zip.status_code == 422 and "not a torch.export archive" in not_zip.json()["detail"]
    stored = {p.name for p in api.app.state.store.root.rglob("*") if p.is_file()}
    assert stored == {model["sha256"], data["sha256"]}  # the rejected bytes were not kept
    bad_config = upload(api, api.alice, "config", "c.json", json.dumps({"compression": {"algorithm": "x"}}).encode())
    assert bad_config.status_code == 422 and bad_config.json()["path"] == "$.compression.algorithm"
    too_big = upload(api, api.alice, "dataset", "big.npz", b"PK\x03\x04" + b"0" * 300_000)
    assert too_big.status_code == 413 and too_big.json()["limit_bytes"] == 200_000
    just_over = upload(api, api.alice, "dataset", "big.npz", b"PK\x03\x04" + b"0" * 200_000)  # under the body slack
    assert just_over.status_code == 413 and just_over.json()["title"] == "Upload too large"
    malformed = api.post("/v1/jobs", headers={**api.alice, "content-type": "application/json"}, content=b"{nope")
    assert malformed.status_code == 422 and malformed.headers["content-type"] == "application/problem+json"
    unknown, missing = api.get("/v1/jobs", headers={"Authorization": "Bearer sq_wrong"}), api.get("/v1/jobs")
    assert unknown.status_code == missing.status_code == 401
    assert unknown.headers["www-authenticate"] == 'Bearer error="invalid_token"'  # RFC 6750
    assert missing.headers["www-authenticate"] == "Bearer"


def test_an_upload_without_a_length_is_cut_off_while_it_streams(api):
    def body():  # chunked: no Content-Length to refuse up front
        boundary = b'--x\r\nContent-Disposition: form-data; name="file"; filename="d.npz"\r\n\r\n'
        yield boundary
        for _ in range(100):
            yield b"0" * 65_536  # 6.5 MB in all, far over the 200 kB limit
        yield b"\r\n--x--\r\n"

    response = api.post(
        "/v1/artifacts",
        headers={**api.alice, "content-type": "multipart/form-data; boundary=x"},
        content=body(),
    )
    assert response.status_code == 413 and response.json()["limit_bytes"] == 200_000
    assert not [p for p in api.app.state.store.root.rglob("*") if p.is_file()]  # nothing spooled into the store


def test_rate_limit_and_quotas_answer_429(tmp_path):
    archive = pt2_bytes(tmp_path)
    quota = len(archive) + 20_000
    app, _, alice, bob = app_with_two_keys(
        tmp_path, rate_limit="4/minute", max_active_jobs_per_key=1, max_storage_bytes_per_key=quota
    )
    client = TestClient(app)
    alice, bob = {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"}
    model = upload(client, alice, "model", "m.pt2", archive).json()
    data = upload(client, alice, "dataset", "d.npz", npz_bytes()).json()
    body = {"name": "x", "model": model["id"], "config": CONFIG, "train_data": data["id"], "val_data": data["id"]}
    assert client.post("/v1/jobs", headers=alice, json=body).status_code == 201
    busy = client.post("/v1/jobs", headers=alice, json=body)  # request 4: within the rate, over the job quota
    assert busy.status_code == 429 and "1 queued or running jobs; the limit is 1" in busy.json()["detail"]
    limited = client.get("/v1/jobs", headers=alice)  # request 5 in a minute
    assert limited.status_code == 429 and "rate limit of 4/minute" in limited.json()["detail"]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert client.get("/v1/jobs", headers=bob).status_code == 200  # limits are per key

    bob_model = upload(client, bob, "model", "m.pt2", archive)  # bob's own quota: the archive fits
    assert bob_model.status_code == 201
    big = upload(client, bob, "dataset", "big.npz", _npz(x=np.zeros((200, 64), np.float32), y=np.zeros(200, np.int64)))
    assert big.status_code == 429 and big.json()["limit_bytes"] == quota
    assert f"the limit is {quota}" in big.json()["detail"]
    assert {p.name for p in app.state.store.root.rglob("*") if p.is_file()} == {model["sha256"], data["sha256"]}


def test_paging_beyond_the_database_integer_range_is_a_422(api):
    # found by the schemathesis fuzz run: offset=2**63 overflowed SQLite's INTEGER and answered 500
    response = api.get("/v1/jobs?limit=1&offset=9223372036854775808", headers=api.alice)
    assert response.status_code == 422 and response.json()["errors"][0]["path"] == "$.query.offset"


def test_sample_configs_are_listed_with_their_description_and_parse_as_configs(api):
    from squeezer.compression.config.nncf_config import NNCFConfig
    from squeezer.compression.config.samples import sample_config_names, sample_config_path

    listed = api.get("/v1/sample-configs").json()  # no key: the project's own files, the same for everyone
    assert [s["name"] for s in listed] == sample_config_names()
    for sample in listed:
        NNCFConfig.validate(sample["config"])  # what the submit page puts in its editor is a valid config
        assert sample["config"] == NNCFConfig.from_json(sample_config_path(sample["file"]))
        assert sample["file"] == f"{sample['name']}.json"
    int8 = api.get("/v1/sample-configs/int8").json()
    assert int8["description"].startswith("INT8 quantization-aware training")
    assert api.get("/v1/sample-configs/int8.json").json() == int8  # the file's name, as the docs list them
    missing = api.get("/v1/sample-configs/int9.json")
    assert missing.status_code == 404 and "int8" in missing.json()["detail"]  # names the samples there are


def test_a_jobs_spec_holds_its_config_and_recipe(api, artifacts):
    model, data = artifacts
    body = {"name": "x", "model": model["id"], "config": CONFIG, "train_data": data["id"], "val_data": data["id"]}
    job = api.post("/v1/jobs", headers=api.alice, json={**body, "recipe": {"epochs": 7}}).json()
    spec = api.get(f"/v1/jobs/{job['id']}/spec", headers=api.alice).json()
    assert spec["config"] == CONFIG and spec["recipe"]["epochs"] == 7 and spec["model"] == model["id"]
    assert "spec" not in job and "config" not in job  # job lists stay small


def test_a_config_artifact_may_carry_comments_and_is_checked_at_upload(api, artifacts):
    """The library, the SDK and the samples accept // comments; the API reads configs with the same reader."""
    model, data = artifacts
    text = b'{\n  // INT8, the README way\n  "compression": {"algorithm": "quantization"} /* block */\n}'
    config = upload(api, api.alice, "config", "int8.json", text)
    assert config.status_code == 201, config.text
    body = {"name": "x", "model": model["id"], "config": config.json()["id"], "train_data": data["id"]}
    job = api.post("/v1/jobs", headers=api.alice, json={**body, "val_data": data["id"]})
    assert job.status_code == 201, job.text
    spec = api.get(f"/v1/jobs/{job.json()['id']}/spec", headers=api.alice).json()
    assert spec["config"] == {"compression": {"algorithm": "quantization"}}  # the worker gets plain JSON
    misspelt = upload(api, api.alice, "config", "c.json", b'{"compresion": {"algorithm": "quantization"}}')
    assert misspelt.status_code == 422 and misspelt.json()["path"] == "$.compresion", misspelt.text
    not_json = upload(api, api.alice, "config", "c.json", b'{"compression": }')
    assert not_json.status_code == 422 and "c.json is not JSON (comments are allowed)" in not_json.json()["detail"]
