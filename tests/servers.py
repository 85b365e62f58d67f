"""Real Redis and PostgreSQL servers started by the test session, on loopback, in throw-away folders.

`.ci/run` (via `make system-deps`) installs redis-server and postgresql; a machine without them
fails these tests with that instruction instead of skipping them.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

INSTALL_HINT = "run 'make system-deps' (apt-get install redis-server postgresql)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"server did not listen on {port} within {timeout} s:\n{log.read_text()[-2000:]}")


class RedisServer:
    """`persistent`: an append-only file, so queued messages survive a restart (as in docker-compose)."""

    def __init__(self, folder: Path, persistent: bool = True) -> None:
        self.persistent = persistent
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail(f"redis-server is not installed: {INSTALL_HINT}")
        self.folder, self.port = folder, free_port()
        self.log = folder / "redis.log"
        self.process: subprocess.Popen | None = None
        self.exe = exe

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        args += ["--save", "", "--appendonly", "yes" if self.persistent else "no"]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        _wait_for_port(self.port, self.process, self.log)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        pytest.fail(f"PostgreSQL's {name} is not installed: {INSTALL_HINT}")
    return found


class PostgresServer:
    """initdb + pg_ctl in a temp folder; as root, the server runs as the 'postgres' system user."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="squeezer-pg-"))  # not under pytest's 0700 root folder
        self.port = free_port()
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.folder, "postgres")
        self.folder.chmod(0o755)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://squeezer@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "squeezer", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")

    def create_database(self, name: str) -> str:
        """A fresh, empty database on this server; returns its URL."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=squeezer dbname=postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        subprocess.run([*self.as_user, _pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"], timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)
