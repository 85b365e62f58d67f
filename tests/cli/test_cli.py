"""The command line: migrations, keys, and `squeezer serve` running a job end to end on the embedded defaults."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from squeezer.api.schemas import JobRead
from squeezer.client import wait_ready
from squeezer.db import JobStatus
from tests.helpers import write_digits_job_files
from tests.servers import free_port


def run_cli(*args, home):
    env = {**os.environ, "SQUEEZER_HOME": str(home), "COLUMNS": "200"}  # no wrapped messages
    return subprocess.run(
        [sys.executable, "-m", "squeezer.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_db_and_keys_commands(tmp_path):
    assert run_cli("db", "upgrade", home=tmp_path).returncode == 0
    created = run_cli("keys", "create", "ci", home=tmp_path)
    assert created.returncode == 0 and created.stdout.strip().startswith("sq_")
    assert run_cli("db", "downgrade", home=tmp_path).returncode == 0


def _refused(home, secret):
    """Whether the API on `home`'s database refuses `secret`, as a running service would."""
    from fastapi.testclient import TestClient

    from squeezer.api import create_app
    from squeezer.settings import Settings
    from tests.helpers import RecordingQueue

    app = create_app(Settings(home=home), queue=RecordingQueue())
    try:
        response = TestClient(app).get("/v1/jobs", headers={"Authorization": f"Bearer {secret}"})
    finally:
        app.state.engine.dispose()
    assert response.status_code in (200, 401), response.text
    return response.status_code == 401 and response.json()["detail"] == "unknown or revoked API key"


def test_keys_are_listed_without_secrets_and_a_revoked_key_is_refused(tmp_path):
    assert run_cli("db", "upgrade", home=tmp_path).returncode == 0
    first, second = (run_cli("keys", "create", "ci", home=tmp_path).stdout.strip() for _ in range(2))
    listed = run_cli("keys", "ls", home=tmp_path)
    assert listed.returncode == 0 and first not in listed.stdout and second not in listed.stdout  # never shown again
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [(row[1], row[-1], row[-2]) for row in rows] == [(first[:10], "ci", "-"), (second[:10], "ci", "-")]
    first_id = rows[0][0]

    ambiguous = run_cli("keys", "revoke", "ci", home=tmp_path)  # two live keys have that name: which one?
    assert ambiguous.returncode == 2 and "2 live keys are named 'ci'" in ambiguous.stderr
    assert first_id in ambiguous.stderr and not _refused(tmp_path, first) and not _refused(tmp_path, second)

    revoked = run_cli("keys", "revoke", first_id, home=tmp_path)
    assert revoked.returncode == 0 and f"revoked key {first_id} (ci, {first[:10]}...)" in revoked.stdout
    assert _refused(tmp_path, first) and not _refused(tmp_path, second)  # at once, and only that key
    assert "was already revoked at" in run_cli("keys", "revoke", first_id, home=tmp_path).stdout
    assert run_cli("keys", "revoke", "ci", home=tmp_path).returncode == 0  # now one live key has the name
    assert _refused(tmp_path, second)
    rows = [line.split() for line in run_cli("keys", "ls", home=tmp_path).stdout.splitlines()[1:]]
    assert all(row[-2] != "-" for row in rows)  # both show when they were revoked
    unknown = run_cli("keys", "revoke", "nobody", home=tmp_path)
    assert unknown.returncode == 2 and "no key with the id or name 'nobody'" in unknown.stderr


def test_revoking_serves_own_key_says_how_to_get_a_new_one(tmp_path):
    from squeezer.cli.server import local_key
    from squeezer.db.migrate import upgrade
    from squeezer.settings import Settings

    settings = Settings(home=tmp_path)
    upgrade(settings.resolved_database_url())
    secret, path = local_key(settings)
    assert local_key(settings) == (secret, path)  # kept: serve makes a key only when its file is missing
    revoked = run_cli("keys", "revoke", "local", home=tmp_path)
    assert revoked.returncode == 0 and f"it was the key in {path}: delete that file" in revoked.stdout


# run with a umask that would leave a new file world-readable, and an audit hook that notes the mode of every
# file in the key's folder whenever the process opens, renames or chmods anything: a file written first and
# fixed up later (write, then chmod) is seen with its first mode at that fix-up
KEY_FILE_PROBE = """
import os, stat, sys
from pathlib import Path
from squeezer.cli.server import local_key
from squeezer.db.migrate import upgrade
from squeezer.settings import Settings
import squeezer.api.keys, squeezer.private_files, squeezer.db

settings = Settings(home=Path(sys.argv[1]))
upgrade(settings.resolved_database_url())
os.umask(int(sys.argv[2], 8))
seen, busy = [], []

def hook(event, args):
    if busy or not event.startswith(("open", "os.", "tempfile.")):
        return
    busy.append(1)
    try:
        for entry in os.scandir(settings.home):
            if "api_key" in entry.name:
                seen.append((event, entry.name, stat.S_IMODE(entry.stat().st_mode)))
    finally:
        busy.clear()

sys.addaudithook(hook)
local_key(settings)
busy.append(1)
seen.append(("after", "api_key", stat.S_IMODE(settings.key_file().stat().st_mode)))
print(seen)
"""


@pytest.mark.parametrize("umask", ["022", "000"])
def test_serves_key_file_is_private_from_its_first_byte(tmp_path, umask):
    result = subprocess.run(
        [sys.executable, "-c", KEY_FILE_PROBE, str(tmp_path), umask], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    seen = ast.literal_eval(result.stdout)
    assert len(seen) >= 2, seen  # the file was seen while it was being written, not only at the end
    assert {mode for _, _, mode in seen} == {0o600}, seen


def test_the_cli_offers_exactly_the_job_states():
    assert JobRead.model_fields["status"].annotation is JobStatus  # the database's states are the API's
    result = run_cli("jobs", "ls", "--status", "bogus", home=Path("/nonexistent"))
    assert result.returncode == 2 and "'bogus' is not one of 'queued'" in result.stdout + result.stderr


def test_configs_lists_and_shows_the_samples(tmp_path):
    listed = run_cli("configs", "ls", home=tmp_path)
    assert listed.returncode == 0 and "int8_early_exit" in listed.stdout and "Early Exit" in listed.stdout
    shown = run_cli("configs", "show", "int8_early_exit.json", home=tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith("{\n    // INT8 with the Early Exit")
    missing = run_cli("configs", "show", "int9", home=tmp_path)
    assert missing.returncode == 2 and "the samples are: const_sparsity" in missing.stdout


@pytest.mark.slow
def test_serve_and_the_job_commands_on_the_embedded_defaults(tmp_path):
    """`squeezer serve` as a subprocess; then submit, watch, list, show, download through the CLI only."""
    port = free_port()
    home = tmp_path / "home"
    env = {**os.environ, "SQUEEZER_HOME": str(home), "SQUEEZER_URL": f"http://127.0.0.1:{port}", "COLUMNS": "160"}
    env.pop("SQUEEZER_API_KEY", None)  # the CLI must find the key file serve writes
    log = (tmp_path / "serve.log").open("w")  # a file, not a pipe: nobody reads it until the end
    server = subprocess.Popen(
        [sys.executable, "-m", "squeezer.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "squeezer.cli", *args], env=env, capture_output=True, text=True, timeout=300
        )

    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=60, alive=lambda: server.poll() is None)
        files = write_digits_job_files(tmp_path)
        config = tmp_path / "int8.json"
        config.write_text(json.dumps({"compression": {"algorithm": "quantization"}}))
        args = ["--config", config, "--train", files["train"], "--val", files["val"], "--epochs", "1"]
        submitted = cli("submit", files["model"], *map(str, args), "--name", "mlp-int8", "--watch")
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        job_id = re.search(r"submitted job ([0-9a-f]{32})", submitted.stdout).group(1)
        assert f"job {job_id} succeeded" in submitted.stdout

        listed = cli("jobs", "ls")
        assert listed.returncode == 0 and job_id in listed.stdout and "succeeded" in listed.stdout
        shown = cli("jobs", "show", job_id)
        assert shown.returncode == 0 and "metrics" in shown.stdout and "model.onnx" in shown.stdout
        downloaded = cli("jobs", "download", job_id, "-o", str(tmp_path))
        assert downloaded.returncode == 0, downloaded.stdout + downloaded.stderr
        onnx = tmp_path / "mlp-int8-model.onnx"
        session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        assert session.run(None, {session.get_inputs()[0].name: np.zeros((2, 64), np.float32)})[0].shape == (2, 10)

        # post-training quantization: calibration samples without labels; then accuracy control with --val
        with np.load(files["train"]) as train:
            np.savez(tmp_path / "calib.npz", x=train["x"][:200])
        quantized = cli("quantize", str(files["model"]), "--calib", str(tmp_path / "calib.npz"), "--watch")
        assert quantized.returncode == 0, quantized.stdout + quantized.stderr
        assert re.search(r"post-training quantization job [0-9a-f]{32} \(queued\)", quantized.stdout)
        assert "succeeded" in quantized.stdout
        args = ["--calib", tmp_path / "calib.npz", "--val", files["val"], "--max-drop", "0.5", "--watch"]
        controlled = cli("quantize", str(files["model"]), *map(str, args))
        assert controlled.returncode == 0, controlled.stdout + controlled.stderr
        assert re.search(r"metric [0-9.]+ \(FP32 [0-9.]+\)", controlled.stdout)
        refused = cli("quantize", str(files["model"]), "--calib", str(tmp_path / "calib.npz"), "--max-drop", "1")
        assert refused.returncode == 2 and "--max-drop needs --val" in refused.stdout + refused.stderr

        missing = cli("jobs", "show", "0" * 32)
        assert missing.returncode == 2 and "404 Not found" in missing.stdout
        finished = cli("jobs", "cancel", job_id)
        assert finished.returncode == 2 and "already finished" in finished.stdout
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    secret = (home / "api_key").read_text().strip()
    assert f"Squeezer API on http://127.0.0.1:{port}" in output and secret in output
    # its worker and the worker's job process stop with it (uvicorn ends serve by re-raising the SIGTERM)
    deadline = time.monotonic() + 30
    while _processes_of(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_of(home) == []


def _processes_of(home):
    """Live processes started with SQUEEZER_HOME=home (the serve's worker) or by them."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().split(") ")[1][0]
        except (OSError, IndexError):
            continue
        if f"SQUEEZER_HOME={home}".encode() in environ.split(b"\0") and state != "Z":
            found.append(proc.name)
    return found
