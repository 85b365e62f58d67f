"""docker-compose.yml validates with docker compose, has the production shape, and names only real settings."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from squeezer.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither 'docker compose' nor 'docker-compose' is installed: run 'make system-deps'")


@pytest.fixture(scope="module")
def resolved():
    result = subprocess.run(
        [*_compose(), "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_validates_and_has_the_production_shape(resolved):
    services = resolved["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker"}
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"  # schema first
        assert depends["redis"]["condition"] == "service_healthy"
        env = services[name]["environment"]
        assert env["SQUEEZER_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["SQUEEZER_BROKER_URL"] == "redis://redis:6379/0"
    # the API's processes (WEB_CONCURRENCY) share their rate-limit counts in the compose Redis
    assert services["api"]["environment"]["SQUEEZER_RATE_LIMIT_STORAGE"].startswith("redis://redis:6379/")
    assert services["migrate"]["command"] == ["squeezer", "db", "upgrade"]
    assert services["worker"]["command"] == ["squeezer", "worker"]
    gpus = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpus == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "--appendonly" in services["redis"]["command"]
    assert services["worker"]["pids_limit"] == 512 and services["worker"]["mem_limit"]  # the jobs' outer wall


def test_every_squeezer_variable_is_a_real_setting():
    fields = {f"SQUEEZER_{name.upper()}" for name in Settings.model_fields}
    for path in ("docker-compose.yml", ".env.example"):
        named = set(re.findall(r"\bSQUEEZER_[A-Z_]+\b", (ROOT / path).read_text()))
        named -= {"SQUEEZER_PORT", "SQUEEZER_WORKER_MEMORY"}  # compose's own: a published port, a container limit
        assert named and named <= fields, (path, named - fields)
    assert fields <= set(re.findall(r"\bSQUEEZER_[A-Z_]+\b", (ROOT / ".env.example").read_text()))  # all documented
