"""The README's SDK example, pasted into an empty folder, runs against `squeezer serve` as written: the
sample config by name, a model that is not 32x32, the key found from the running service's record."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from squeezer.client import wait_ready
from tests.servers import free_port

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_sdk_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("From Python (`squeezer.client`)") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_sdk_example_runs_as_pasted(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUEEZER_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), SQUEEZER_HOME=str(tmp_path / "service"), COLUMNS="160")
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "squeezer.cli", "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "example.py").write_text(readme_sdk_example())
    user_env = {k: v for k, v in env.items() if k != "SQUEEZER_HOME"}  # a user's shell: nothing set
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=60, alive=lambda: server.poll() is None)
        run = subprocess.run(
            [sys.executable, "example.py"], cwd=folder, env=user_env, capture_output=True, text=True, timeout=600
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    assert run.returncode == 0, run.stdout + run.stderr + (tmp_path / "serve.log").read_text()[-3000:]
    status, metric = run.stdout.splitlines()[-1].split()[:2]  # after the progress bar
    assert status == "succeeded" and float(metric) > 90, run.stdout  # breast cancer, in percent: a real accuracy
    session = ort.InferenceSession(str(folder / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [30]
