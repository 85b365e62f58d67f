"""The installable parts, each in a fresh virtual environment, as a user installs them from this repository:
`pip install .` is the library alone and runs the README's library quick start; `pip install ./client` is the
SDK and CLI without torch, and talks to a running service with files already exported."""

from __future__ import annotations

import re
import shutil
import subprocess
import venv
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from squeezer.client import Client
from tests.helpers import app_with_two_keys, live_server, write_digits_job_files

ROOT = Path(__file__).resolve().parents[2]
# the torch CI runs (the Makefile's TORCH): installed first, as the Makefile does, so that the range in
# pyproject.toml does not make pip pick the newest release
TORCH = "torch==2.13.0"


def _source(folder: Path) -> Path:
    """What a clone holds of the distributions, copied: builds write into their source folder."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(ROOT / "squeezer", folder / "squeezer", ignore=ignore)
    shutil.copytree(ROOT / "client", folder / "client", symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, folder / name)
    return folder


def _fresh_venv(folder: Path, *requirements: str) -> Path:
    venv.create(folder, with_pip=True)
    python = folder / "bin" / "python"
    for requirement in requirements:
        _run([str(python), "-m", "pip", "install", "-q", requirement])
    return python


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _imports(python: Path, module: str) -> bool:
    found = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(python), "-c", found]).returncode == 0


def readme_library_quick_start() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Library quick start") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_library_alone_installs_and_runs_the_readme_quick_start(tmp_path):
    python = _fresh_venv(tmp_path / "venv", TORCH, str(_source(tmp_path / "src")))
    assert _imports(python, "torch") and _imports(python, "onnxruntime")
    for service_part in ("fastapi", "sqlalchemy", "celery", "httpx", "typer"):
        assert not _imports(python, service_part), f"{service_part} came with the library alone"
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "quick_start.py").write_text(readme_library_quick_start())
    run = _run([str(python), "quick_start.py"], cwd=folder)
    assert float(run.stdout.split()[-1]) > 0.85, run.stdout[-2000:]  # "INT8 accuracy 0.9xx": it learnt
    session = ort.InferenceSession(str(folder / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: np.ones((3, 16), np.float32)})
    assert logits.shape == (3, 2)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {
        n.op_type for n in onnx.load(folder / "model.int8.onnx").graph.node
    }
    # the command is the client's: it names the extra instead of a traceback
    cli = subprocess.run([str(python.parent / "squeezer"), "jobs", "ls"], capture_output=True, text=True)
    assert cli.returncode != 0 and "pip install 'squeezer[client]'" in cli.stderr, cli.stderr
    assert "Traceback" not in cli.stderr


@pytest.mark.slow
def test_the_client_alone_runs_without_torch_against_a_service(tmp_path):
    python = _fresh_venv(tmp_path / "venv", str(_source(tmp_path / "src") / "client"))
    for heavy in ("torch", "onnxruntime", "sqlalchemy", "fastapi", "celery"):
        assert not _imports(python, heavy), f"{heavy} came with the client"
    squeezer = str(python.parent / "squeezer")
    files = write_digits_job_files(tmp_path)  # exported by the test, which has torch: the user's own files
    app, queue, alice, _ = app_with_two_keys(tmp_path / "service")
    with live_server(app) as url:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SQUEEZER_URL": url, "SQUEEZER_API_KEY": alice}
        env["COLUMNS"] = "200"
        submit = [squeezer, "submit", str(files["model"]), "--config", "int8", "--name", "from-the-client"]
        submit += ["--train", str(files["train"]), "--val", str(files["val"])]
        submitted = _run(submit, env=env)
        listed = _run([squeezer, "jobs", "ls"], env=env)
        refused = subprocess.run([squeezer, "serve"], env=env, capture_output=True, text=True)
        with Client(url, alice) as client:
            jobs = client.jobs.list().items
    assert [job.name for job in jobs] == ["from-the-client"] and len(queue.jobs) == 1, submitted.stdout
    assert "from-the-client" in listed.stdout and "queued" in listed.stdout, listed.stdout
    assert refused.returncode == 2 and "pip install 'squeezer[service]'" in refused.stderr, refused.stderr
