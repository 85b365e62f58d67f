"""A bad recipe or config is refused by the SDK and the CLI before anything is uploaded: `InvalidInput`
with the JSON path (not a pydantic error), and exit status 2 with the message (not a traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from squeezer.client import Client, InvalidInput
from squeezer.examples.models import MLP
from tests.helpers import app_with_two_keys, live_server


@pytest.fixture
def service(tmp_path):
    app, _queue, alice, _ = app_with_two_keys(tmp_path)
    with live_server(app) as url, Client(url, alice) as client:
        yield app, client


def _stored_artifacts(app):
    from squeezer.db import Artifact

    with app.state.sessions() as session:
        return session.query(Artifact).count()


@pytest.mark.parametrize(
    ("recipe", "config", "path", "fragment"),
    [
        ({"optimizer": "rmsprop"}, {}, "$.recipe.optimizer", "Input should be 'sgd', 'adam' or 'adamw'"),
        ({"lr": -1}, {}, "$.recipe.lr", "greater than 0"),
        ({}, {"compression": {"algorithm": "x"}}, "$.compression.algorithm", "quantization"),
    ],
)
def test_compress_refuses_a_bad_recipe_or_config_before_uploading(service, recipe, config, path, fragment):
    app, client = service
    config = config or {"compression": {"algorithm": "quantization"}}
    x = torch.rand(4, 64)
    with pytest.raises(InvalidInput) as raised:
        client.compress(MLP(), x[:1], config, (x, torch.zeros(4, dtype=torch.long)), (x, torch.zeros(4)), recipe)
    assert raised.value.path == path and fragment in raised.value.detail, raised.value
    assert _stored_artifacts(app) == 0  # nothing was uploaded


def test_jobs_create_raises_invalid_input_for_a_bad_recipe(service):
    _, client = service
    with pytest.raises(InvalidInput, match=r"\$\.recipe\.batch_size: Input should be less than or equal to 65536"):
        client.jobs.create("j", "m", {"compression": {}}, "t", "v", {"batch_size": 10**6})


def _cli_submit(tmp_path, *args):
    for name in ("m.pt2", "train.npz", "val.npz"):
        (tmp_path / name).write_bytes(b"never uploaded")
    env = {**os.environ, "SQUEEZER_URL": "http://127.0.0.1:9", "SQUEEZER_API_KEY": "sq_x", "COLUMNS": "200"}
    command = ["submit", str(tmp_path / "m.pt2"), "--train", str(tmp_path / "train.npz")]
    command += ["--val", str(tmp_path / "val.npz"), *args]
    return subprocess.run(
        [sys.executable, "-m", "squeezer.cli", *command], env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_submit_refuses_a_bad_recipe_or_config_with_exit_2_before_uploading(tmp_path):
    # the URL points at a closed port: any upload would fail with "could not reach", not these messages
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"compression": {"algorithm": "quantization"}}))
    bad_recipe = _cli_submit(tmp_path, "--config", str(config), "--recipe", '{"optimizer":"rmsprop"}')
    assert bad_recipe.returncode == 2, bad_recipe.stdout + bad_recipe.stderr
    assert "$.recipe.optimizer: Input should be 'sgd', 'adam' or 'adamw'" in bad_recipe.stdout
    assert "Traceback" not in bad_recipe.stdout + bad_recipe.stderr
    config.write_text(json.dumps({"compression": {"algorithm": "quantization", "bits": 4}}))
    bad_config = _cli_submit(tmp_path, "--config", str(config))
    assert bad_config.returncode == 2 and "$.compression" in bad_config.stdout, bad_config.stdout + bad_config.stderr
    assert "Invalid compression config" in bad_config.stdout
