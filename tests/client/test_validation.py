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
from tests.helpers import app_with_two_keys, live_server, write_digits_job_files


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


def test_cli_submit_and_search_take_commented_configs_and_sample_names(tmp_path):
    """The CLI, the SDK and the API read configs alike: the samples' // comments pass everywhere, a sample's
    name stands for its file, and a misspelt section is refused before any upload."""
    app, _queue, alice, _ = app_with_two_keys(tmp_path)
    with live_server(app) as url, Client(url, alice) as client:
        _cli_configs(app, client, {**os.environ, "SQUEEZER_URL": url, "SQUEEZER_API_KEY": alice, "COLUMNS": "200"})


def _cli_configs(app, client, env):
    tmp_path = app.state.settings.home
    files = write_digits_job_files(tmp_path)

    def cli(*args):
        command = [sys.executable, "-m", "squeezer.cli", *map(str, args)]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)

    commented = tmp_path / "mine.json"
    commented.write_text('{\n  // INT8, one epoch\n  "compression": {"algorithm": "quantization"},\n}')
    data = ["--train", files["train"], "--val", files["val"], "--epochs", "1"]
    for config in (commented, "int8", "int8_early_exit.json"):
        submitted = cli("submit", files["model"], "--config", config, *data)
        assert submitted.returncode == 0 and "submitted job" in submitted.stdout, submitted.stdout + submitted.stderr
    assert client.jobs.list().total == 3

    misspelt = tmp_path / "typo.json"
    misspelt.write_text('{"compresion": {"algorithm": "quantization"}}')
    before = _stored_artifacts(app)
    refused = cli("submit", files["model"], "--config", misspelt, *data)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "did you mean 'compression' (found 'compresion')?" in refused.stdout
    assert _stored_artifacts(app) == before  # refused before the model was uploaded

    candidate = cli("search", files["model"], *data[:4], "--candidate", f"mine={commented}", "--candidate", "int8")
    assert candidate.returncode == 0, candidate.stdout + candidate.stderr
    typo = cli("search", files["model"], *data[:4], "--candidate", f"mine={misspelt}")
    assert typo.returncode == 2 and "did you mean 'compression'" in typo.stdout + typo.stderr
