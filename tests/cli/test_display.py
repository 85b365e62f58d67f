"""What people read: `jobs ls` / `jobs show` output when piped, the API's timestamps, the progress bar
of a job that exits early, and a worker started as root without Celery's superuser warning."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from datetime import UTC, datetime, timedelta, timezone

import pytest
from celery.exceptions import SecurityWarning
from celery.platforms import check_privileges
from fastapi.testclient import TestClient
from rich.console import Console
from sqlalchemy import select

from squeezer.api.schemas import JobRead
from squeezer.client.progress import JobProgress
from squeezer.db.models import ApiKey, Job, JobStatus
from squeezer.worker.celery_app import silence_root_warning
from tests.helpers import app_with_two_keys, live_server

LONG_NAME = "resnet50-int8-with-a-name-long-enough-to-need-more-than-eighty-columns"


def _finished_job(app) -> str:
    """A succeeded job row as the worker leaves it, stored in SQLite (which hands back naive datetimes)."""
    with app.state.sessions() as session:
        owner = session.scalars(select(ApiKey).where(ApiKey.name == "alice")).one()
        job = Job(
            owner_id=owner.id,
            name=LONG_NAME,
            status=JobStatus.succeeded,
            spec={},
            epoch=0,
            total_epochs=4,
            current_metric=97.22222222222223,
            accuracy_budget=0.5555555555555429,
            result={"metric": 97.22222222222223, "uncompressed_metric": 97.77777777777777, "statistics": {}},
            started_at=datetime.now(UTC),
            finished_at=datetime.now(UTC),
        )
        job.result["statistics"] = {"quantization": {"ratio_of_enabled_quantizations": 0.8333333333333334}}
        session.add(job)
        session.commit()
        return job.id


def _cli(url, key, *args):
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # captured output: rich would assume 80
    env |= {"SQUEEZER_URL": url, "SQUEEZER_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "squeezer.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_piped_ls_and_show_are_whole_and_rounded(tmp_path):
    app, _, alice, _ = app_with_two_keys(tmp_path)
    job_id = _finished_job(app)
    with live_server(app) as url:
        listed = _cli(url, alice, "jobs", "ls")
        shown = _cli(url, alice, "jobs", "show", job_id)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if job_id in line)
    assert LONG_NAME in row and "succeeded" in row and "0 (of ≤4)" in row and "97.22" in row  # one line, nothing cut

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert any("accuracy_budget" in line and "0.5556" in line for line in lines)
    assert any("result.uncompressed_metric" in line and "97.78" in line for line in lines)
    assert any(
        "result.statistics.quantization.ratio_of_enabled_quantizations" in line and "0.8333" in line for line in lines
    )
    assert "{" not in shown.stdout and "0.5555555555555429" not in shown.stdout  # no raw dicts or float noise
    assert any("finished_at" in line and line.rstrip(" │").endswith("Z") for line in lines)


def test_timestamps_are_utc_with_z_on_post_and_get_alike(tmp_path):
    app, _, alice, _ = app_with_two_keys(tmp_path)
    api = TestClient(app)
    headers = {"Authorization": f"Bearer {alice}"}
    posted = api.post(
        "/v1/artifacts",
        headers=headers,
        data={"kind": "config"},
        files={"file": ("int8.json", b'{"compression": {"algorithm": "quantization"}}')},
    )
    assert posted.status_code == 201, posted.text
    got = api.get(f"/v1/artifacts/{posted.json()['id']}", headers=headers)
    assert posted.json()["created_at"].endswith("Z")
    assert got.json()["created_at"] == posted.json()["created_at"]  # SQLite's naive value, read back as UTC

    job = api.get(f"/v1/jobs/{_finished_job(app)}", headers=headers).json()
    assert job["created_at"].endswith("Z") and job["finished_at"].endswith("Z")


def test_timestamps_in_another_zone_are_turned_into_utc():
    fields = {f: None for f in JobRead.model_fields if f not in ("id", "name", "status", "priority", "epoch")}
    berlin = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=1)))
    job = JobRead(id="j", name="n", status="queued", priority=0, epoch=0, **fields | {"created_at": berlin})
    assert job.model_dump_json().count('"created_at":"2026-01-01T11:00:00Z"') == 1


def _render(job: JobRead) -> str:
    out = io.StringIO()
    with JobProgress(job, console=Console(file=out, width=160, color_system=None)) as bar:
        bar.job(job)
    return out.getvalue()


def test_the_progress_bar_of_an_early_exit_shows_the_epochs_that_ran():
    fields = {f: None for f in JobRead.model_fields}
    common = fields | {"id": "j", "name": "demo", "priority": 0, "created_at": datetime.now(UTC)}
    early = _render(JobRead(**common | {"status": "succeeded", "epoch": 0, "total_epochs": 4}))
    assert "0/4" in early and "4/4" not in early and "done after 0 of 4 epochs" in early
    full = _render(JobRead(**common | {"status": "succeeded", "epoch": 4, "total_epochs": 4}))
    assert "4/4" in full and "done after" not in full


def test_only_celerys_superuser_warning_is_silenced(monkeypatch):
    monkeypatch.setattr(os, "getuid", lambda: 0)  # as in a container
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with warnings.catch_warnings():  # the filter stays inside this test
        warnings.simplefilter("error")
        with pytest.raises(SecurityWarning, match="superuser privileges"):
            check_privileges(["json"])
        silence_root_warning()
        check_privileges(["json"])
        with pytest.raises(SecurityWarning, match="another"):
            warnings.warn(SecurityWarning("another security warning"), stacklevel=1)


def test_a_piped_progress_bar_keeps_its_whole_line(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    fields = {f: None for f in JobRead.model_fields}
    job = JobRead(
        **fields
        | {"id": "j", "name": LONG_NAME, "priority": 0, "created_at": datetime.now(UTC), "status": "running"}
        | {"epoch": 2, "total_epochs": 6, "stage": "FULLY_COMPRESSED", "current_metric": 97.7, "compression_rate": 0.8}
    )
    with JobProgress(job) as bar:  # its own console, on the captured (not a terminal) stdout
        bar.job(job)
    line = next(line for line in capsys.readouterr().out.splitlines() if LONG_NAME in line)
    assert "2/6" in line and "metric 97.7" in line and "rate 0.8" in line


def test_errors_and_warnings_are_printed_verbatim_once(tmp_path):
    """rich read "[EpochMessage,DoneMessage,FailedMessage]" as markup and dropped it, and `[norm1]` from a
    quantizer id in the statistics; messages and ids are data."""
    app, _, alice, _ = app_with_two_keys(tmp_path)
    error = "loss diverged at epoch 3 (loss=nan) [EpochMessage,DoneMessage,FailedMessage] [red]x[/red]"
    warning = "the exported model is epoch 2's [not the last]"
    with app.state.sessions() as session:
        owner = session.scalars(select(ApiKey).where(ApiKey.name == "alice")).one()
        job = Job(owner_id=owner.id, name="[b]mine[/b]", status=JobStatus.failed, spec={}, error=error)
        alphas = {"Block[0]/LayerNorm[norm1]/layer_norm_0|OUTPUT": 0.95}  # quantizer ids, as PTQ reports them
        job.result = {"warnings": [warning], "statistics": {"post_training": {"smooth_quant_alphas": alphas}}}
        job.finished_at = datetime.now(UTC)
        session.add(job)
        session.commit()
        job_id = job.id
    with live_server(app) as url:
        watched = _cli(url, alice, "jobs", "watch", job_id)
        shown = _cli(url, alice, "jobs", "show", job_id)
        listed = _cli(url, alice, "jobs", "ls")
    assert watched.returncode == 1
    assert watched.stdout.count(error) == 1 and watched.stdout.count(warning) == 1, watched.stdout
    assert error in shown.stdout and "[b]mine[/b]" in shown.stdout and shown.stdout.count(warning) == 1
    assert "Block[0]/LayerNorm[norm1]/layer_norm_0|OUTPUT" in shown.stdout
    assert "[b]mine[/b]" in listed.stdout
