"""Models and configs that could only fail inside a job are refused at upload or submit, naming the
file or the config field and saying how to fix it."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch

from squeezer.examples.models import MLP
from tests.api.test_api import CONFIG, api, artifacts, npz_bytes, upload  # noqa: F401  (fixtures)


def _static_batch_pt2(tmp_path):
    torch.export.save(torch.export.export(MLP().eval(), (torch.rand(1, 64),)), tmp_path / "static.pt2")
    return (tmp_path / "static.pt2").read_bytes()


def _torch_save_pt2(tmp_path):
    torch.save(MLP().state_dict(), tmp_path / "weights.pt2")
    return (tmp_path / "weights.pt2").read_bytes()


def _other_zip(_tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("make", "title", "fragments"),
    [
        (
            _static_batch_pt2,
            "Model has a static batch size",
            ["m.pt2 was exported with a static batch of 1 (input shape [1, 64])", "dynamic_shapes=({0: "],
        ),
        (_torch_save_pt2, "Invalid model archive", ["m.pt2 is a torch.save file", "torch.export.save("]),
        (_other_zip, "Invalid model archive", ["m.pt2 is a zip file, not a torch.export archive"]),
    ],
)
def test_models_that_cannot_train_are_refused_at_upload(api, tmp_path, make, title, fragments):  # noqa: F811
    response = upload(api, api.alice, "model", "m.pt2", make(tmp_path))
    assert response.status_code == 422 and response.json()["title"] == title, response.text
    assert all(f in response.json()["detail"] for f in fragments), response.json()["detail"]
    assert not [p for p in api.app.state.store.root.rglob("*") if p.is_file()]  # nothing kept


@pytest.mark.parametrize(
    ("input_info", "path", "fragment"),
    [
        ({"sample_size": [1, 32]}, "$.config.input_info.sample_size", "sample_size [1, 32] does not match"),
        ([{"sample_size": [4, 3, 8, 8]}], "$.config.input_info[0].sample_size", "model's input [None, 64]"),
        ([{"sample_size": [1, 64]}, {"sample_size": [1, 64]}], "$.config.input_info", "describes 2 inputs"),
    ],
)
def test_input_info_that_does_not_describe_the_model_is_refused_at_submit(
    api,  # noqa: F811
    artifacts,  # noqa: F811
    input_info,
    path,
    fragment,
):
    model, data = artifacts
    body = {"name": "x", "model": model["id"], "train_data": data["id"], "val_data": data["id"]}
    response = api.post("/v1/jobs", headers=api.alice, json={**body, "config": {**CONFIG, "input_info": input_info}})
    assert response.status_code == 422 and response.json()["path"] == path, response.text
    assert fragment in response.json()["detail"] and response.json()["detail"].startswith("config: ")
    assert api.queued == []
    # any batch in input_info is fine: the model's batch is dynamic
    fits = api.post(
        "/v1/jobs", headers=api.alice, json={**body, "config": {**CONFIG, "input_info": {"sample_size": [7, 64]}}}
    )
    assert fits.status_code == 201, fits.text
