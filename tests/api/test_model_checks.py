"""Models and configs that could only fail inside a job are refused at upload or submit, naming the
file or the config field and saying how to fix it."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch

from squeezer.api.inspection import DYNAMIC_BATCH_EXPORT, model_signature
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
            [
                "m.pt2 was exported with a static batch of 1 (input shape [1, 64])",
                "from an example batch of at least 2",
                DYNAMIC_BATCH_EXPORT,
            ],
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


def test_the_static_batch_fix_as_the_message_writes_it_makes_an_archive_the_api_takes(api, tmp_path, monkeypatch):  # noqa: F811
    model, x = MLP().eval(), torch.rand(1, 64)  # the batch-1 example that gave the static archive
    # the plain fix fails: torch specializes the batch of a batch-1 example to 1, so Dim('batch') is refused
    with pytest.raises(torch._dynamo.exc.UserError, match=r"specialized it to be a constant \(1\)"):
        torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    monkeypatch.chdir(tmp_path)
    exec(DYNAMIC_BATCH_EXPORT, {"torch": torch, "model": model, "x": x})
    assert model_signature(tmp_path / "model.pt2")["inputs"] == [[None, 64]]  # the batch is dynamic
    response = upload(api, api.alice, "model", "m.pt2", (tmp_path / "model.pt2").read_bytes())
    assert response.status_code == 201, response.text


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
