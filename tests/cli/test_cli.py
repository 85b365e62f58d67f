"""The command line: migrations, keys, and `squeezer serve` running a job end to end on the embedded defaults."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.worker.helpers import upload_digits_job_inputs, wait_for_job


def run_cli(*args, home):
    env = {**os.environ, "SQUEEZER_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "squeezer.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_db_and_keys_commands(tmp_path):
    assert run_cli("db", "upgrade", home=tmp_path).returncode == 0
    created = run_cli("keys", "create", "ci", home=tmp_path)
    assert created.returncode == 0 and created.stdout.strip().startswith("sq_")
    assert run_cli("db", "downgrade", home=tmp_path).returncode == 0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_runs_a_job_on_the_embedded_defaults(tmp_path):
    port = _free_port()
    env = {**os.environ, "SQUEEZER_HOME": str(tmp_path)}
    log = (tmp_path / "serve.log").open("w")  # a file, not a pipe: nobody reads it until the end
    server = subprocess.Popen(
        [sys.executable, "-m", "squeezer.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        secret = (tmp_path / "api_key").read_text().strip()
        with httpx.Client(base_url=base, timeout=30) as client:
            headers = {"Authorization": f"Bearer {secret}"}
            ids = upload_digits_job_inputs(client, headers, tmp_path)
            body = {
                "name": "int8",
                "model": ids["model"],
                "config": {"compression": {"algorithm": "quantization"}},
                "train_data": ids["train"],
                "val_data": ids["val"],
                "recipe": {"epochs": 1},
            }
            job_id = client.post("/v1/jobs", headers=headers, json=body).json()["id"]
            assert wait_for_job(client, headers, job_id) == "succeeded"
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert f"Squeezer API on http://127.0.0.1:{port}" in output and secret in output
