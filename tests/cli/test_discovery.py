"""Finding the local service from any folder: the per-user records `squeezer serve` writes, and how the
SDK and the CLI choose between them, SQUEEZER_URL / SQUEEZER_API_KEY and a key file in the current folder.

The autouse fixture in tests/conftest.py points XDG_STATE_HOME at a temporary folder.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from squeezer.client import Client, ClientError, wait_ready
from squeezer.client.discovery import LocalService, client_url, record_file, services_dir
from tests.servers import free_port

A, B = "http://127.0.0.1:8123", "http://127.0.0.1:8124"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """An empty current folder and no SQUEEZER_* settings: what a newcomer has in another terminal."""
    for name in ("SQUEEZER_URL", "SQUEEZER_API_KEY", "SQUEEZER_HOME"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def other_pid():
    """A live process other than this one: the pid of a second `serve`."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.fixture
def two_projects(tmp_path, other_pid):
    """Two projects of one user, each with its `serve` running (A on :8123, B on :8124)."""
    projects = tmp_path / "a", tmp_path / "b"
    LocalService(A, "sq_a", os.getpid(), str(projects[0] / ".squeezer")).publish()
    LocalService(B, "sq_b", other_pid, str(projects[1] / ".squeezer")).publish()
    for project in projects:
        (project / ".squeezer").mkdir(parents=True)
    return projects


def _exited_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _cli_env() -> dict[str, str]:
    """No SQUEEZER_* settings, and this checkout's code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUEEZER_")}
    return env | {"PYTHONPATH": str(Path(__file__).parents[2]), "COLUMNS": "300"}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "squeezer.cli", *args]
    return subprocess.run(command, cwd=cwd, env=_cli_env(), capture_output=True, text=True, timeout=120)


def _target(client: Client) -> tuple[str, str]:
    return client.url, client.http.headers["Authorization"].removeprefix("Bearer ")


def test_the_record_is_private_to_the_user(tmp_path):
    record = LocalService("http://127.0.0.1:8123", "sq_secret", os.getpid(), str(tmp_path))
    path = record.publish()
    assert path == record_file("http://127.0.0.1:8123/") and path.parent == services_dir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {
        "url": "http://127.0.0.1:8123",
        "api_key": "sq_secret",
        "pid": os.getpid(),
        "home": str(tmp_path),
        "started_at": record.started_at,
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
    with pytest.raises(ClientError, match="no 'squeezer serve' is running as this user") as raised:
        Client()
    assert str(services_dir()) in str(raised.value) and "SQUEEZER_API_KEY" in str(raised.value)


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


@contextlib.contextmanager
def listening_elsewhere():
    """A real HTTP server on loopback standing for another host; yields its URL and the Authorization
    headers of the requests it received."""
    received: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # the name http.server calls
            received.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_a_dotenv_here_never_decides_where_a_key_goes(elsewhere, tmp_path):
    """A cloned repository's `.env` names another host; this folder's key file and this user's running
    service hold a key. The SDK and the CLI use the service, and the other host hears nothing."""
    from tests.helpers import app_with_two_keys, live_server

    app, _, alice, _ = app_with_two_keys(tmp_path / "service")
    (elsewhere / ".squeezer").mkdir()
    (elsewhere / ".squeezer" / "api_key").write_text(alice + "\n")
    with listening_elsewhere() as (evil, received), live_server(app) as url:
        (elsewhere / ".env").write_text(f"SQUEEZER_URL={evil}\n")
        LocalService(url, alice, os.getpid(), str(elsewhere / ".squeezer")).publish()
        with Client() as client:
            assert client.url == url and client.jobs.list().total == 0
        listed = _cli("jobs", "ls", cwd=elsewhere)
        assert listed.returncode == 0 and "0 of 0" in listed.stdout, listed.stdout + listed.stderr
        assert f"* {url}" in _cli("services", cwd=elsewhere).stdout
        record_file(url).unlink()  # the key file alone: the default URL, still not the .env's
        with Client() as client:
            assert client.url == "http://127.0.0.1:8000"
    assert received == []
    app.state.engine.dispose()


def test_a_live_service_on_the_same_url_keeps_its_record(tmp_path, other_pid):
    mine = LocalService(A, "sq_first", os.getpid(), str(tmp_path)).publish()
    LocalService(A, "sq_second", other_pid, str(tmp_path)).publish()
    assert json.loads(mine.read_text())["api_key"] == "sq_first"  # the second one cannot bind that port
    LocalService(A, "sq_third", _exited_pid(), str(tmp_path)).publish()
    LocalService(A, "sq_fourth", other_pid, str(tmp_path)).withdraw()
    assert json.loads(mine.read_text())["api_key"] == "sq_first"  # nor remove the first one's record


def test_a_second_serve_does_not_replace_the_first(tmp_path, other_pid):
    first = LocalService(A, "sq_a", os.getpid(), str(tmp_path / "a" / ".squeezer"))
    second = LocalService(B, "sq_b", other_pid, str(tmp_path / "b" / ".squeezer"))
    first.publish()
    second.publish()
    assert LocalService.live() == ([first, second], "")
    second.withdraw()  # the second one stops: the first one is still found
    assert LocalService.live() == ([first], "")


def test_a_dead_serve_on_the_same_url_is_replaced(tmp_path):
    LocalService(A, "sq_old", _exited_pid(), str(tmp_path / "old")).publish()
    new = LocalService(A, "sq_new", os.getpid(), str(tmp_path / "new"))
    new.publish()
    assert LocalService.live() == ([new], "")


def test_in_a_project_folder_its_own_serve_is_used(two_projects, monkeypatch, elsewhere):
    a, b = two_projects
    for folder, target in [(a, (A, "sq_a")), (b, (B, "sq_b")), (a / "scripts", (A, "sq_a"))]:
        folder.mkdir(exist_ok=True)
        monkeypatch.chdir(folder)
        with Client() as client:
            assert _target(client) == target, folder
    monkeypatch.setenv("SQUEEZER_HOME", str(b / ".squeezer"))  # "for" a project, from anywhere
    monkeypatch.chdir(elsewhere)
    with Client() as client:
        assert _target(client) == (B, "sq_b")


def test_a_subproject_with_its_own_key_does_not_take_the_enclosing_projects_serve(two_projects, elsewhere, monkeypatch):
    sub = two_projects[0] / "sub"
    (sub / ".squeezer").mkdir(parents=True)
    (sub / ".squeezer" / "api_key").write_text("sq_sub\n")
    monkeypatch.chdir(sub)
    with Client() as client:  # its own serve is not running: the default URL, never A with this key
        assert _target(client) == ("http://127.0.0.1:8000", "sq_sub")


def test_in_another_folder_several_serves_are_listed_not_chosen(two_projects, elsewhere, monkeypatch):
    a, b = two_projects
    with pytest.raises(ClientError) as raised:
        Client()
    message = str(raised.value)
    assert f"{A}  (serve for {a / '.squeezer'}" in message and f"{B}  (serve for {b / '.squeezer'}" in message
    assert "--url" in message and "SQUEEZER_URL" in message and "sq_a" not in message and "sq_b" not in message
    monkeypatch.setenv("SQUEEZER_API_KEY", "sq_env")  # a key alone does not say which one either
    with pytest.raises(ClientError, match="several local services"):
        Client()
    monkeypatch.delenv("SQUEEZER_API_KEY")
    monkeypatch.setenv("SQUEEZER_URL", B)  # a URL does, and gets that service's key
    with Client() as client:
        assert _target(client) == (B, "sq_b")


def test_a_dead_serve_is_ignored(tmp_path, elsewhere):
    LocalService(A, "sq_a", os.getpid(), str(tmp_path / "a" / ".squeezer")).publish()
    LocalService(B, "sq_b", _exited_pid(), str(tmp_path / "b" / ".squeezer")).publish()
    with Client() as client:  # the only one running
        assert _target(client) == (A, "sq_a")


def test_the_cli_lists_several_serves_instead_of_choosing(two_projects, elsewhere):
    listed = _cli("jobs", "ls", cwd=elsewhere)
    assert listed.returncode == 2, listed.stdout + listed.stderr
    assert A in listed.stdout and B in listed.stdout and "several local services" in listed.stdout
    services = _cli("services", cwd=elsewhere).stdout.splitlines()
    assert services[0].startswith(f"  {A}  {two_projects[0] / '.squeezer'}  pid {os.getpid()}")
    assert services[1].startswith(f"  {B}  {two_projects[1] / '.squeezer'}")
    assert services[2].startswith("choose one with url= (--url) or SQUEEZER_URL")
    services = _cli("services", cwd=two_projects[1]).stdout.splitlines()
    assert services[0].startswith(f"  {A}") and services[1].startswith(f"* {B}") and len(services) == 2


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
    assert failed.returncode == 2 and "no 'squeezer serve' is running" in failed.stdout  # it removed its record


@pytest.mark.slow
def test_two_serves_of_one_user_each_stay_their_projects_target(tmp_path):
    """`squeezer serve` in two projects: each project's CLI uses its own, another folder gets both listed."""
    env = _cli_env()
    projects, elsewhere = [tmp_path / "a", tmp_path / "b"], tmp_path / "elsewhere"
    ports = [free_port(), free_port()]
    servers = []
    for folder in [*projects, elsewhere]:
        folder.mkdir()

    try:
        for project, port in zip(projects, ports, strict=True):
            log = (project / "serve.log").open("w")
            command = [sys.executable, "-m", "squeezer.cli", "serve", "--port", str(port)]
            servers.append(subprocess.Popen(command, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT))
            log.close()
            wait_ready(f"http://127.0.0.1:{port}", timeout=60, alive=lambda: servers[-1].poll() is None)
        for project, port in zip(projects, ports, strict=True):
            listed = _cli("services", cwd=project)
            assert f"* http://127.0.0.1:{port}  {project / '.squeezer'}" in listed.stdout, listed.stdout
            assert _cli("jobs", "ls", cwd=project).returncode == 0
        ambiguous = _cli("jobs", "ls", cwd=elsewhere)
        assert ambiguous.returncode == 2 and "several local services" in ambiguous.stdout
        assert all(f"http://127.0.0.1:{port}" in ambiguous.stdout for port in ports)
        servers[0].terminate()  # a's serve stops: b's is the only one, found from anywhere
        servers[0].wait(timeout=60)
        assert _cli("jobs", "ls", cwd=elsewhere).returncode == 0
        # but never from a, whose key file belongs to a's serve
        assert "used here: http://127.0.0.1:8000, not one of these" in _cli("services", cwd=projects[0]).stdout
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=60)
