"""Shared fixtures: real data (scikit-learn's bundled digits) and small trained models."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from squeezer.compression.config.samples import CONFIG_DIR
from squeezer.examples.digits import accuracy, digits_loaders, train_epoch
from squeezer.examples.models import ResidualCNN
from squeezer.examples.zoo import prepare_torchvision

# torchvision's PyPI wheel cannot load its C++ ops beside CPU torch, and transformers and timm import it
# themselves: make that import work before any test triggers it (see squeezer.examples.zoo)
prepare_torchvision()

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
def _trained_cnn(digits32):
    torch.manual_seed(0)
    train, val = digits32
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
