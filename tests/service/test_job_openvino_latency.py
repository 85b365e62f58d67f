"""A job through the service, as users run it (SDK -> API -> worker in its confined job process): its
OpenVINO IR export downloads from the API, the SDK and the CLI and runs in OpenVINO; its result holds
the FP32 and compressed latency measured on the worker, with a warning exactly where INT8 is slower."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
import zipfile

import httpx
import numpy as np
import pytest
import torch

from squeezer.client import Client, RuntimeLatency
from squeezer.compression.export.openvino_export import import_openvino, read_ir_archive
from squeezer.examples.digits import digits_tensors
from squeezer.examples.models import MLP
from squeezer.runtime import RUNTIMES
from squeezer.worker.execute import execute_job
from tests.helpers import app_with_two_keys, live_server


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    """One INT8 job on digits, run by the worker logic in a Landlock-confined job process."""
    tmp_path = tmp_path_factory.mktemp("service")
    app, _, alice, _ = app_with_two_keys(tmp_path)
    torch.manual_seed(0)
    x, y = digits_tensors(image_size=None)
    with live_server(app) as url, Client(url, alice) as client:
        job = client.compress(
            MLP(hidden=32),
            x[:1],
            {"compression": {"algorithm": "quantization"}},
            (x[:1200], y[:1200]),
            (x[1200:].numpy(), y[1200:].numpy()),
            {"epochs": 1, "lr": 3e-3, "batch_size": 32},
            name="mlp",
        )
        worker = threading.Thread(
            target=execute_job, args=(job.id, app.state.sessions, app.state.store, tmp_path / "w")
        )
        worker.start()
        done = client.jobs.wait(job, timeout=300)
        worker.join()
        yield client, done, url, alice, tmp_path, (x[1200:], y[1200:])


@pytest.mark.slow  # the fixture runs a job (about 30 s here)
def test_openvino_export_downloads_and_runs(finished_job):
    client, job, url, key, tmp_path, (x_val, y_val) = finished_job
    assert job.status == "succeeded", job.error
    listed = {e.kind: e for e in client.jobs.exports(job)}
    assert listed["openvino"].filename == "model_openvino.zip"

    (tmp_path / "sdk").mkdir()
    path = client.jobs.download(job, "openvino", tmp_path / "sdk")  # checked against its SHA-256
    assert path.name == "mlp-model_openvino.zip"
    assert sorted(zipfile.ZipFile(path).namelist()) == ["model.bin", "model.xml"]
    ov = import_openvino()
    compiled = ov.Core().compile_model(read_ir_archive(path), "CPU")
    logits = compiled(x_val.numpy())[compiled.outputs[0]]
    accuracy = 100.0 * float((np.asarray(logits).argmax(1) == y_val.numpy()).mean())
    assert abs(accuracy - job.current_metric) <= 0.5  # the IR computes what the job validated

    raw = httpx.get(f"{url}/v1/jobs/{job.id}/artifacts/openvino", headers={"Authorization": f"Bearer {key}"})
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/zip"
    assert hashlib.sha256(raw.content).hexdigest() == listed["openvino"].sha256 == raw.headers["x-checksum-sha256"]

    out = tmp_path / "cli"
    out.mkdir()
    env = {**os.environ, "SQUEEZER_URL": url, "SQUEEZER_API_KEY": key}
    cli = [sys.executable, "-m", "squeezer.cli", "jobs"]
    done = subprocess.run(
        [*cli, "download", job.id, "--kind", "openvino", "-o", str(out)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (out / "mlp-model_openvino.zip").read_bytes() == raw.content


@pytest.mark.slow
def test_result_holds_measured_latency_and_warns_exactly_when_slower(finished_job):
    client, job, url, key, tmp_path, _ = finished_job
    assert job.status == "succeeded", job.error
    assert set(job.result.latency) == set(RUNTIMES)  # onnxruntime, and openvino (installed here)
    for runtime, timing in job.latency.items():
        assert isinstance(timing, RuntimeLatency)
        assert timing.fp32_ms > 0 and timing.compressed_ms > 0 and timing.runs >= 1
        assert timing.batch_size == 32  # the recipe's batch size
        assert timing.speedup == pytest.approx(timing.fp32_ms / timing.compressed_ms)
        warned = [w for w in job.warnings if f"is not faster than FP32 in {runtime} " in w]
        assert len(warned) == (1 if timing.speedup < 1 else 0), (runtime, timing, job.warnings)
    log = client.jobs.download(job, "log", tmp_path / "log.txt").read_text()
    for runtime in RUNTIMES:
        assert f"latency in {runtime}, batch 32: FP32 " in log
    for warning in job.warnings:  # the same words in the job's log (runtime.compare's, or the runner's hint)
        assert re.search(r"WARNING squeezer\.(runtime\.compare|worker\.runner): " + re.escape(warning), log)

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"SQUEEZER_URL": url, "SQUEEZER_API_KEY": key}
    shown = subprocess.run(
        [sys.executable, "-m", "squeezer.cli", "jobs", "show", job.id], env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout[shown.stdout.index("latency on the worker's CPU") : shown.stdout.index("exports")]
    rows = {
        line.split()[1]: line for line in table.splitlines() if line.split()[1:2] in (["onnxruntime"], ["openvino"])
    }
    assert set(rows) == set(RUNTIMES)
    for runtime, timing in job.latency.items():
        assert f"{timing.speedup:.2f}x" in rows[runtime]
    assert shown.stdout.count("warning:") == len(job.warnings)
