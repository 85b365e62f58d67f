"""The Docker image installs docker/requirements.lock with --no-deps: the lock must satisfy every requirement
of the extras the image runs (service, openvino), or the image would miss a package that pip never reports."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
# the image: Debian's CPython 3.11 on x86_64 Linux (Dockerfile's FROM)
IMAGE = {"python_version": "3.11", "sys_platform": "linux", "platform_machine": "x86_64", "extra": ""}


def locked() -> dict[str, Version]:
    text = (ROOT / "docker" / "requirements.lock").read_text(encoding="utf-8")
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M)
    return {name.lower().replace("_", "-"): Version(version) for name, version in pins}


def image_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in ("service", "openvino", "client"):  # service pulls in client
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return [r for r in wanted if r.name != "squeezer" and (r.marker is None or r.marker.evaluate(IMAGE))]


def test_the_lock_satisfies_every_requirement_of_the_image():
    pins = locked()
    for requirement in image_requirements():
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{requirement} is not in docker/requirements.lock (make lock)"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{requirement}: locked {pins[name]}"


def test_the_lock_takes_torchs_cpu_build_and_no_cuda_libraries():
    pins = locked()
    assert str(pins["torch"]).endswith("+cpu")
    assert not [name for name in pins if name.startswith("nvidia-")]


def test_every_locked_package_is_hash_checked():
    text = (ROOT / "docker" / "requirements.lock").read_text(encoding="utf-8")
    entries = re.split(r"^(?=[A-Za-z0-9_.\-]+==)", text, flags=re.M)[1:]
    assert len(entries) == len(locked()) and all("--hash=sha256:" in entry for entry in entries)
