"""The service on its embedded defaults (SQLite, the SQLAlchemy broker, a real Celery worker process) and
Debian's Chromium driven by Playwright, for the dashboard's tests and `bench/bench_ui.py`.

Playwright's own browser download (`playwright install`) cannot run here; `make system-deps` installs
Debian's `chromium`, which Playwright drives through `executable_path`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian Chromium under Playwright."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        raise RuntimeError(f"{CHROMIUM} is missing: run 'make system-deps' (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Service:
    url: str
    app: Any
    keys: dict[str, str]  # key name -> secret
    home: Path


@contextlib.contextmanager
def service(home: Path, key_names: tuple[str, ...] = ("alice", "bob"), worker: bool = True) -> Iterator[Service]:
    """The API on a free loopback port (in this process) and, with `worker`, one worker process."""
    from squeezer.api import create_app
    from squeezer.api.keys import create_key
    from squeezer.db.migrate import upgrade
    from squeezer.settings import Settings
    from tests.helpers import live_server

    settings = Settings(home=home)
    upgrade(settings.resolved_database_url())
    app = create_app(settings)  # the default queue: Celery on the embedded broker
    keys = {}
    with app.state.sessions() as session:
        for name in key_names:
            keys[name] = create_key(session, name)[1]
    process = None
    if worker:
        # the job process server starts in "/": it finds this checkout's package through PYTHONPATH
        env = {
            **os.environ,
            "SQUEEZER_HOME": str(home),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        with (home / "worker.log").open("a") as log:  # a file, not a pipe: a full pipe would block the worker
            process = subprocess.Popen(
                [sys.executable, "-m", "squeezer.worker.celery_app"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
    try:
        with live_server(app) as url:
            yield Service(url, app, keys, home)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
        app.state.engine.dispose()


def sparse_int8(level: float) -> dict[str, Any]:
    """A user candidate's NNCF config: magnitude sparsity at `level` from the start, then INT8."""
    schedule = {"schedule": "multistep", "multistep_steps": [], "multistep_sparsity_levels": [level]}
    return {
        "compression": [
            {"algorithm": "magnitude_sparsity", "sparsity_init": level, "params": schedule},
            {"algorithm": "quantization"},
        ]
    }


def submit_search(
    client: Any, files: dict[str, Path], name: str, candidates: list[Any], epochs: int, **settings: Any
) -> dict[str, Any]:
    """The files of `tests.helpers.write_digits_job_files` uploaded and a search over `candidates` created
    through the API with `client` (an httpx client holding a key); returns the created search."""
    ids = {}
    for field, kind in (("model", "model"), ("train", "dataset"), ("val", "dataset")):
        upload = {"file": (files[field].name, files[field].read_bytes())}
        response = client.post("/v1/artifacts", data={"kind": kind}, files=upload)
        response.raise_for_status()
        ids[field] = response.json()["id"]
    body = {
        "name": name,
        "model": ids["model"],
        "train_data": ids["train"],
        "val_data": ids["val"],
        "accuracy": {"maximal_absolute_accuracy_degradation": 3.0},
        "candidates": candidates,
        "early_stopping": False,
        "recipe": {"epochs": epochs, "batch_size": 32, "lr": 1e-3},
        **settings,
    }
    response = client.post("/v1/searches", json=body)
    if response.status_code != 201:
        raise RuntimeError(f"POST /v1/searches: {response.status_code} {response.text}")
    return response.json()  # type: ignore[no-any-return]
