"""Token-id models through the API: a `.pt2` whose input is int64 ids (a tiny BERT) records its input
dtype and vocabulary at upload, a dataset of int64 ids records its id range, and a job whose data do
not fit (float x for ids, ids outside the vocabulary, ids for a float model) is refused at submit with
a 422 naming the field. An archive that returns an HF `ModelOutput` is refused at upload."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from safetensors.numpy import save as save_safetensors

from squeezer.client.packaging import export_model
from squeezer.db import Artifact
from tests.api.test_api import pt2_bytes, upload
from tests.helpers import api_client, tiny_bert

SEQ = 12
VOCAB = 128


@pytest.fixture
def api(tmp_path):
    """The API with room for the tiny BERT's archive (about 0.4 MB)."""
    return api_client(tmp_path, max_upload_bytes=2_000_000)


def meta(api, response):
    """What the API recorded about an upload (kept on the row, not in the response)."""
    assert response.status_code == 201, response.text
    with api.app.state.sessions() as session:
        return session.get(Artifact, response.json()["id"]).meta


@pytest.fixture(scope="module")
def bert_pt2(tmp_path_factory):
    """The tiny BERT exported as the SDK does (dynamic batch, plain tensor outputs)."""
    path = tmp_path_factory.mktemp("bert") / "bert.pt2"
    export_model(tiny_bert(), torch.randint(0, VOCAB, (1, SEQ)), path)
    return path.read_bytes()


def _npz(x, y):
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    return buf.getvalue()


def ids(n, low=0, high=VOCAB):
    return np.random.default_rng(0).integers(low, high, (n, SEQ), dtype=np.int64)


def _submit(api, model_id, train_id, val_id):
    body = {
        "name": "bert",
        "model": model_id,
        "config": {"compression": {"algorithm": "quantization"}},
        "train_data": train_id,
        "val_data": val_id,
    }
    return api.post("/v1/jobs", headers=api.alice, json=body)


def test_token_id_model_and_dataset_are_read_at_upload(api, bert_pt2):
    model = meta(api, upload(api, api.alice, "model", "bert.pt2", bert_pt2))
    assert model["inputs"] == [[None, SEQ]] and model["outputs"] == [[None, 4]]
    assert model["input_dtypes"] == ["int64"] and model["input_vocab"] == [VOCAB]  # from the JSON graph

    x = ids(24, low=3, high=90)
    for name, data in (
        ("d.npz", _npz(x, np.zeros(24, np.int64))),
        ("d.safetensors", save_safetensors({"x": x, "y": np.zeros(24, np.int64)})),
    ):
        dataset = meta(api, upload(api, api.alice, "dataset", name, data))
        assert (dataset["x_dtype"], dataset["x_min"], dataset["x_max"]) == ("int64", int(x.min()), int(x.max()))


def test_token_id_job_with_fitting_data_is_queued(api, bert_pt2):
    model = upload(api, api.alice, "model", "bert.pt2", bert_pt2).json()
    data = upload(api, api.alice, "dataset", "d.npz", _npz(ids(16), np.arange(16) % 4)).json()
    response = _submit(api, model["id"], data["id"], data["id"])
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("x", "field", "fragments"),
    [
        (
            np.random.default_rng(0).random((16, SEQ)).astype(np.float32),
            "train_data",
            ["x is float32, the model takes int64 token ids", f"integer ids in [0, {VOCAB - 1}]"],
        ),
        (ids(16, low=VOCAB - 2, high=VOCAB + 5), "val_data", [f"token ids must be in [0, {VOCAB - 1}]", "found ["]),
        (ids(16, low=-3, high=4), "val_data", [f"token ids must be in [0, {VOCAB - 1}]", "found [-"]),
    ],
)
def test_data_that_cannot_feed_token_ids_are_refused_at_submit(api, bert_pt2, x, field, fragments):
    model = upload(api, api.alice, "model", "bert.pt2", bert_pt2).json()
    good = upload(api, api.alice, "dataset", "good.npz", _npz(ids(16), np.arange(16) % 4)).json()
    bad = upload(api, api.alice, "dataset", "bad.npz", _npz(x, np.arange(16) % 4)).json()
    which = {"train_data": good["id"], "val_data": good["id"], field: bad["id"]}
    response = _submit(api, model["id"], which["train_data"], which["val_data"])
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["path"] == f"$.{field}" and problem["detail"].startswith(f"{field}: "), problem
    assert all(f in problem["detail"] for f in fragments), problem["detail"]
    assert api.queued == []


def test_token_ids_for_a_float_model_are_refused_at_submit(api, tmp_path):
    model = upload(api, api.alice, "model", "m.pt2", pt2_bytes(tmp_path)).json()  # an MLP on float32 x 64
    data = upload(api, api.alice, "dataset", "ids.npz", _npz(np.ones((8, 64), np.int64), np.zeros(8, np.int64)))
    response = _submit(api, model["id"], data.json()["id"], data.json()["id"])
    assert response.status_code == 422 and response.json()["path"] == "$.train_data", response.text
    assert "x is int64, the model takes float32 features" in response.json()["detail"]


def test_an_archive_returning_a_model_output_is_refused_at_upload(api, tmp_path):
    program = torch.export.export(
        tiny_bert(),
        (torch.randint(0, VOCAB, (2, SEQ)),),
        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
    )
    torch.export.save(program, tmp_path / "raw.pt2")  # torch.export as is: returns SequenceClassifierOutput
    response = upload(api, api.alice, "model", "raw.pt2", (tmp_path / "raw.pt2").read_bytes())
    assert response.status_code == 422 and response.json()["title"] == "Model returns a custom class", response.text
    assert "transformers.modeling_outputs.SequenceClassifierOutput" in response.json()["detail"]
    assert "Client.compress" in response.json()["detail"]  # says how to get an archive that loads


def test_input_info_of_token_ids_for_a_float_model_is_refused_at_submit(api, tmp_path):
    model = upload(api, api.alice, "model", "m.pt2", pt2_bytes(tmp_path)).json()  # an MLP on float32 x 64
    data = upload(api, api.alice, "dataset", "d.npz", _npz(np.zeros((8, 64), np.float32), np.zeros(8, np.int64)))
    body = {
        "name": "mlp",
        "model": model["id"],
        "config": {
            "input_info": [{"sample_size": [1, 64], "type": "long"}],
            "compression": {"algorithm": "quantization"},
        },
        "train_data": data.json()["id"],
        "val_data": data.json()["id"],
    }
    response = api.post("/v1/jobs", headers=api.alice, json=body)
    assert response.status_code == 422 and response.json()["path"] == "$.config.input_info[0].type", response.text
    assert "the model's input is float32" in response.json()["detail"]
    body["config"]["input_info"][0]["type"] = "float"
    assert api.post("/v1/jobs", headers=api.alice, json=body).status_code == 201
