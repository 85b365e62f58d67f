"""Shared fixtures: real data (scikit-learn's bundled digits) and small trained models."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # xdist's workers share the cores: one torch/OpenMP thread each instead of one per core in every
    # worker (oversubscribed), also in the servers and job processes they start (which inherit it).
    # A value set by whoever runs pytest is kept.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # reads OMP_NUM_THREADS as it loads

from squeezer.compression.config.samples import CONFIG_DIR
from squeezer.examples.digits import accuracy, digits_loaders, train_epoch
from squeezer.examples.models import ResidualCNN
from squeezer.examples.zoo import prepare_torchvision

# torchvision's PyPI wheel cannot load its C++ ops beside CPU torch, and transformers and timm import it
# themselves: make that import work before any test triggers it (see squeezer.examples.zoo)
prepare_torchvision()
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case torch was imported before this file

# the project's own sample configs (shipped in the package); tests never read outside the repository
SAMPLE_CONFIGS: Path = CONFIG_DIR


@pytest.fixture(autouse=True)
def _private_state_home(tmp_path_factory, monkeypatch):
    """`squeezer serve` records itself under $XDG_STATE_HOME; tests (and the servers they spawn) use their own."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(scope="session")
def digits32():
    """(train_loader, val_loader) of 1x32x32 digits."""
    return digits_loaders(image_size=32, batch_size=64)


@pytest.fixture(scope="session")
def digits_flat():
    return digits_loaders(image_size=None, batch_size=64)


@pytest.fixture(scope="session")
def _trained_cnn():
    torch.manual_seed(0)
    # its own loaders: the shared ones' shuffles depend on how often earlier tests read them, and with
    # xdist that order differs per worker, so the same model must not depend on it
    train, val = digits_loaders(image_size=32, batch_size=64)
    model = ResidualCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        train_epoch(model, train, opt)
    return model, accuracy(model, val)


@pytest.fixture
def trained_cnn(_trained_cnn):
    """A ResidualCNN trained on digits (fresh copy per test) and its FP32 validation accuracy."""
    model, acc = _trained_cnn
    return copy.deepcopy(model), acc


@pytest.fixture
def cnn_config(tmp_path):
    def make(**quantization):
        return {
            "input_info": {"sample_size": [1, 1, 32, 32]},
            "log_dir": str(tmp_path / "logs"),
            "compression": {"algorithm": "quantization", **quantization},
        }

    return make


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real Redis, started once for the session (only when a test asks for it)."""
    from tests.servers import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL, started once for the session (only when a test asks for it)."""
    from tests.servers import PostgresServer

    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """The API's database, once on each: "" (the embedded SQLite under its home), then a fresh PostgreSQL one."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("postgres_server").create_database(f"api_{tmp_path.name}"[:60])


@pytest.fixture(scope="session")
def uninterrupted_job(tmp_path_factory):
    """The resume scenario's job (`tests.worker.pausing.RESUME_RECIPE` on the digits job files), run once
    without a stop: {"records": [...], "metric": ...}, what each way of stopping a worker must resume to.
    One run for the whole session: under xdist the first worker to ask runs it, under a lock, and the
    others read its JSON from the run's shared temp folder."""
    from filelock import FileLock

    from squeezer.recipe import Recipe
    from squeezer.worker.runner import run_job
    from tests.helpers import write_digits_job_files
    from tests.worker.pausing import RESUME_CONFIG, RESUME_RECIPE

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this run's folder, above the workers' own
    cached = root / "uninterrupted-job.json"
    with FileLock(f"{cached}.lock"):
        if not cached.is_file():
            folder = root / "uninterrupted-job"
            folder.mkdir(exist_ok=True)
            files = write_digits_job_files(folder)
            result = run_job(
                files["model"], RESUME_CONFIG, files["train"], files["val"], Recipe(**RESUME_RECIPE), folder / "work"
            )
            cached.write_text(json.dumps({"records": result.records, "metric": result.metric}))
    return json.loads(cached.read_text())


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(items):
    """Under `--dist loadgroup`, the tests of a module that share a module-scoped fixture (a server, a
    browser, a trained model) run on one worker, so it is built once; the rest spread test by test."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        if any(d.scope == "module" for defs in info.name2fixturedefs.values() for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
