"""A hostile upload cannot reach credentials or other jobs' files: a `.pt2` whose pickle payload runs
inside the job process (through a deliberately unsafe loader) probes everything a worker holds.

The same payload runs twice: in a bare job process (no credentials in its environment, nothing more),
where it can read the worker's files, environment and Redis, which proves the probes are live; and
in the Landlock-confined job process that workers use, where every probe is refused."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from squeezer.db import Artifact, Job
from squeezer.worker.sandbox.confine import landlock_abi
from tests.helpers import app_with_two_keys, upload_digits_job_inputs

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cret-broker-password"

WORKER = r"""
import sys
from squeezer.settings import get_settings
from squeezer.worker.celery_app import _resources
from squeezer.worker.execute import execute_job

HOSTILE_LOADER = "tests.worker.hostile:load_unsafely"  # in place of run_job: it unpickles the upload
settings = get_settings()
sessions, store = _resources(settings.resolved_database_url(), str(settings.resolved_storage_dir()))
sandbox, repo = sys.argv[1:]
job_id = sys.stdin.readline().strip()  # the job is submitted once this process runs: the payload knows its pid
print(execute_job(job_id, sessions, store, settings.home / "work", 10.0, sandbox, HOSTILE_LOADER, [repo]))
"""

PROBES = r"""
import json, os, socket
report = {"environment": sorted(os.environ)}
def probe(name, action):
    try:
        report[name] = "allowed: " + repr(action())[:120]
    except Exception as exc:
        report[name] = "denied: " + type(exc).__name__
probe("own data", lambda: len(open(OWN_DATA, "rb").read()))
probe("own folder", lambda: open("payload_was_here", "w").write("x"))
probe("worker's environment", lambda: SECRET.encode() in open(f"/proc/{WORKER_PID}/environ", "rb").read())
probe("database", lambda: open(DATABASE, "rb").read(16))
probe("other key's upload", lambda: open(OTHER_UPLOAD, "rb").read(16))
probe("other job's folder", lambda: open(OTHER_STATE, "rb").read())
probe("list the jobs' folders", lambda: os.listdir(WORK_ROOT))
probe("write to the store", lambda: open(STORE + "/planted", "w").write("x"))
probe("redis", lambda: socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=2).close())
probe("signal the worker", lambda: os.kill(WORKER_PID, 0))
json.dump(report, open("payload_report.json", "w"))
raise RuntimeError("the payload ran")
"""


class Payload:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code, {}))


def hostile_archive(clean: bytes, code: str) -> bytes:
    """The archive with its sample inputs replaced by a pickle that runs `code` when unpickled."""
    payload = io.BytesIO()
    torch.save((Payload(code),), payload)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(clean)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info, payload.getvalue() if info.filename.endswith("sample_inputs/model.pt") else data)
    return out.getvalue()


@pytest.mark.skipif(landlock_abi() < 4, reason="needs Landlock ABI 4+ (Linux 6.7+); workers refuse jobs without it")
def test_a_pickle_payload_in_an_upload_reaches_nothing_but_its_own_job(tmp_path, redis_server):
    app, _, alice, bob = app_with_two_keys(tmp_path)
    client = TestClient(app)
    as_alice, as_bob = ({"Authorization": f"Bearer {key}"} for key in (alice, bob))
    (tmp_path / "alice").mkdir()
    (tmp_path / "bob").mkdir()
    alice_ids = upload_digits_job_inputs(client, as_alice, tmp_path / "alice")
    work_root = tmp_path / "work"  # the worker's <home>/work
    other_state = work_root / "alice-job" / "loop_state.pt"  # another job's folder, mid-run
    other_state.parent.mkdir(parents=True)
    other_state.write_bytes(b"alice's loop state")
    with app.state.sessions() as session:
        other_upload = app.state.store.path(session.get(Artifact, alice_ids["model"]).storage_path)
    (tmp_path / "api_key").write_text("a local key")

    # a worker process, started as deployments start it: credentials in its environment
    worker_env = os.environ | {
        "SQUEEZER_HOME": str(tmp_path),
        "SQUEEZER_BROKER_URL": f"redis://:{SECRET}@127.0.0.1:{redis_server.port}/0",
        "SQUEEZER_DATABASE_URL": app.state.settings.resolved_database_url(),
        "SQUEEZER_API_KEY": alice,
    }
    bob_ids = upload_digits_job_inputs(client, as_bob, tmp_path / "bob")

    with app.state.sessions() as session:
        own_data = app.state.store.path(session.get(Artifact, bob_ids["train"]).storage_path)
    constants = {
        "OWN_DATA": str(own_data),
        "SECRET": SECRET,
        "DATABASE": str(tmp_path / "squeezer.db"),
        "OTHER_UPLOAD": str(other_upload),
        "OTHER_STATE": str(other_state),
        "WORK_ROOT": str(work_root),
        "STORE": str(app.state.store.root),
        "REDIS_PORT": redis_server.port,
    }

    def run(sandbox: str) -> tuple[dict, Job]:
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, sandbox, str(REPO)],
            env=worker_env,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        prelude = "".join(f"{name} = {value!r}\n" for name, value in (constants | {"WORKER_PID": worker.pid}).items())
        evil = hostile_archive((tmp_path / "bob" / "m.pt2").read_bytes(), prelude + PROBES)
        response = client.post(
            "/v1/artifacts", headers=as_bob, data={"kind": "model"}, files={"file": ("evil.pt2", evil)}
        )
        assert response.status_code == 201, response.text
        model_id = response.json()["id"]
        body = {"name": f"evil-{sandbox}", "model": model_id, "config": {"compression": {"algorithm": "quantization"}}}
        body |= {"train_data": bob_ids["train"], "val_data": bob_ids["val"], "recipe": {"epochs": 1}}
        response = client.post("/v1/jobs", headers=as_bob, json=body)
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        out, err = worker.communicate(job_id + "\n", timeout=300)
        status = out.strip().splitlines()[-1] if out.strip() else err[-2000:]
        assert status == "failed"
        report = json.loads((work_root / job_id / "payload_report.json").read_text())
        with app.state.sessions() as session:
            return report, session.get(Job, job_id)

    # unconfined, the probes work: this is what a payload in a worker could do
    bare, job = run("process")
    assert not [k for k in bare["environment"] if k.startswith("SQUEEZER")]  # the environment is scrubbed anyway
    assert bare["worker's environment"] == "allowed: True"
    for name in (
        "database",
        "other key's upload",
        "other job's folder",
        "list the jobs' folders",
        "redis",
        "signal the worker",
    ):
        assert bare[name].startswith("allowed"), (name, bare[name])

    (app.state.store.root / "planted").unlink()  # it could write to the store, too

    confined, job = run("landlock")
    assert confined["own data"].startswith("allowed") and confined["own folder"].startswith("allowed")
    assert not [k for k in confined["environment"] if k.startswith("SQUEEZER")]
    refused = {k: v for k, v in confined.items() if k not in ("environment", "own data", "own folder")}
    assert refused == {
        "worker's environment": "denied: PermissionError",
        "database": "denied: PermissionError",
        "other key's upload": "denied: PermissionError",
        "other job's folder": "denied: PermissionError",
        "list the jobs' folders": "denied: PermissionError",
        "write to the store": "denied: PermissionError",
        "redis": "denied: PermissionError",
        "signal the worker": "denied: PermissionError",
    }
    # the job failed cleanly: the loader's error is the reason, and its log is there; nothing else was touched
    assert job.status == "failed" and job.error.startswith("RuntimeError: We ran into an error when deserializing")
    log = client.get(f"/v1/jobs/{job.id}/artifacts/log", headers=as_bob)
    assert log.status_code == 200 and "the job failed" in log.text
    assert not (app.state.store.root / "planted").exists()
    assert other_state.read_bytes() == b"alice's loop state"
    assert client.get("/v1/jobs", headers=as_alice).json()["total"] == 0
