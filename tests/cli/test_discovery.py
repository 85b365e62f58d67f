"""Finding the local service from any folder: the per-user record `squeezer serve` writes, and how the
SDK and the CLI choose between it, SQUEEZER_URL / SQUEEZER_API_KEY and a key file in the current folder.

The autouse fixture in tests/conftest.py points XDG_STATE_HOME at a temporary folder.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from squeezer.client import Client, ClientError, wait_ready
from squeezer.client.discovery import LocalService, client_url, local_service_file
from tests.servers import free_port


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """An empty current folder and no SQUEEZER_* settings: what a newcomer has in another terminal."""
    for name in ("SQUEEZER_URL", "SQUEEZER_API_KEY", "SQUEEZER_HOME"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def _exited_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_record_is_private_to_the_user(tmp_path):
    path = LocalService("http://127.0.0.1:8123", "sq_secret", os.getpid(), str(tmp_path)).publish()
    assert path == local_service_file() and path.parent.name == "squeezer"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {
        "url": "http://127.0.0.1:8123",
        "api_key": "sq_secret",
        "pid": os.getpid(),
        "home": str(tmp_path),
    }


def test_a_live_record_gives_client_its_url_and_key_in_any_folder(elsewhere, tmp_path):
    LocalService("http://127.0.0.1:8123", "sq_secret", os.getpid(), str(tmp_path / "home")).publish()
    with Client() as client:
        assert client.url == "http://127.0.0.1:8123"
        assert client.http.headers["Authorization"] == "Bearer sq_secret"


def test_a_stale_record_is_ignored_with_a_message_that_says_so(elsewhere, tmp_path):
    pid = _exited_pid()
    LocalService("http://127.0.0.1:8123", "sq_secret", pid, str(tmp_path / "home")).publish()
    with pytest.raises(ClientError) as raised:
        Client()
    message = str(raised.value)
    assert f"pid {pid}) is no longer running" in message and "squeezer serve" in message
    assert "sq_secret" not in message


def test_without_any_record_the_message_names_where_it_looked(elsewhere):
    with pytest.raises(ClientError, match="no 'squeezer serve' has run as this user") as raised:
        Client()
    assert str(local_service_file()) in str(raised.value) and "SQUEEZER_API_KEY" in str(raised.value)


def test_the_recorded_key_is_never_sent_to_another_url(elsewhere, tmp_path, monkeypatch):
    LocalService("http://127.0.0.1:8123", "sq_secret", os.getpid(), str(tmp_path / "home")).publish()
    monkeypatch.setenv("SQUEEZER_URL", "http://example.com:9000")
    with pytest.raises(ClientError, match=r"the local service runs on http://127\.0\.0\.1:8123, not http://example"):
        Client()


def test_environment_and_arguments_come_before_the_record(elsewhere, tmp_path, monkeypatch):
    LocalService("http://127.0.0.1:8123", "sq_secret", os.getpid(), str(tmp_path / "home")).publish()
    with Client("http://127.0.0.1:9999", "sq_given") as client:
        assert client.url == "http://127.0.0.1:9999" and client.http.headers["Authorization"] == "Bearer sq_given"
    monkeypatch.setenv("SQUEEZER_API_KEY", "sq_env")
    with Client() as client:  # a key without a URL: the running local service's URL
        assert client.url == "http://127.0.0.1:8123" and client.http.headers["Authorization"] == "Bearer sq_env"


def test_a_key_file_here_wins_and_takes_the_url_only_from_its_own_service(elsewhere, tmp_path):
    (elsewhere / ".squeezer").mkdir()
    (elsewhere / ".squeezer" / "api_key").write_text("sq_here\n")
    LocalService("http://127.0.0.1:8123", "sq_other", os.getpid(), str(tmp_path / "other-home")).publish()
    with Client() as client:  # another folder's service: the default URL, as before the record existed
        assert client.url == "http://127.0.0.1:8000" and client.http.headers["Authorization"] == "Bearer sq_here"
    LocalService("http://127.0.0.1:8124", "sq_here", os.getpid(), str(elsewhere / ".squeezer")).publish()
    with Client() as client:  # this folder's service, on another port
        assert client.url == "http://127.0.0.1:8124" and client.http.headers["Authorization"] == "Bearer sq_here"


def test_a_live_service_on_the_same_url_keeps_its_record(tmp_path):
    mine = LocalService("http://127.0.0.1:8123", "sq_first", os.getpid(), str(tmp_path)).publish()
    LocalService("http://127.0.0.1:8123", "sq_second", os.getpid() + 1_000_000, str(tmp_path)).publish()
    assert json.loads(mine.read_text())["api_key"] == "sq_first"  # the second one cannot bind that port
    LocalService("http://127.0.0.1:8124", "sq_third", os.getpid() + 1_000_000, str(tmp_path)).publish()
    assert json.loads(mine.read_text())["api_key"] == "sq_third"  # the newest service on another port wins


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),
        ("::", "http://[::1]:8000"),
        ("::1", "http://[::1]:8000"),
        ("localhost", "http://localhost:8000"),
    ],
)
def test_the_recorded_url_is_one_a_local_client_can_reach(host, url):
    assert client_url(host, 8000) == url


@pytest.mark.slow
def test_after_serve_the_cli_works_from_another_folder_without_settings(tmp_path):
    """`squeezer serve` on a non-default port in one folder; `squeezer jobs ls` in another, with no SQUEEZER_*."""
    port = free_port()
    here, there = tmp_path / "project", tmp_path / "elsewhere"
    here.mkdir()
    there.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUEEZER_")}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "squeezer.cli", "serve", "--port", str(port)],
        cwd=here,
        env={**env, "PYTHONPATH": str(Path.cwd())},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=60, alive=lambda: server.poll() is None)
        listed = subprocess.run(
            [sys.executable, "-m", "squeezer.cli", "jobs", "ls"],
            cwd=there,
            env={**env, "PYTHONPATH": str(Path.cwd())},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert "0 of 0" in listed.stdout
        assert not (there / ".squeezer").exists()  # nothing was created where the CLI ran
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    failed = subprocess.run(
        [sys.executable, "-m", "squeezer.cli", "jobs", "ls"],
        cwd=there,
        env={**env, "PYTHONPATH": str(Path.cwd()), "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 2 and "is no longer running" in failed.stdout
