"""The API process validates configs and recipes with pydantic alone: it never imports torch."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "onnx", "onnxruntime", "torch_pruning")


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_the_api_app_imports_without_torch(tmp_path):
    """Through the real `create_app()` with its default queue (Celery on the embedded broker), as `serve` and
    uvicorn build it, and a job id sent through that queue: it used to import the worker's modules to send one."""
    loaded = _modules_after(
        "from squeezer.api.app import create_app\nfrom squeezer.settings import Settings\n"
        f"app = create_app(Settings(home={str(tmp_path)!r}))\napp.openapi()\n"
        "app.state.queue.enqueue('a-job-id', 0)"
    )
    assert "kombu.transport.sqlalchemy" in loaded  # the id went to the embedded broker (SQLite)
    assert "squeezer.compression.config.nncf_config" in loaded  # it does validate configs
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    # job states change in one module that both sides share; the API needs nothing of the worker's
    assert "squeezer.jobs.transitions" in loaded
    assert not any(m.startswith("squeezer.worker") for m in loaded), sorted(m for m in loaded if "worker" in m)


def test_the_library_names_still_load_from_the_package():
    loaded = _modules_after(
        "from squeezer import NNCFConfig, create_compressed_model\n"
        "from squeezer.compression.registry import ALGORITHMS\n"
        "assert all(row.load() is not None for row in ALGORITHMS.values())"
    )
    assert "torch" in loaded


def test_post_training_quantization_imports_no_other_algorithm():
    # each algorithm loads when a config names it: quantize skips pruning's torch-pruning (and its timm)
    loaded = _modules_after("from squeezer.compression import quantize")
    assert "torch_pruning" not in loaded and "squeezer.compression.pruning.algorithm" not in loaded


def test_the_job_states_import_without_sqlalchemy():
    # the SDK and the job process read the states from here; the database is the API's and the worker's
    loaded = _modules_after("import squeezer.jobs.status")
    assert "sqlalchemy" not in loaded


def test_the_job_process_protocol_imports_without_sqlalchemy():
    # the sandboxed job process imports the protocol: it needs the export kinds, not the database
    loaded = _modules_after("import squeezer.worker.sandbox.protocol, squeezer.worker.sandbox.child")
    assert "squeezer.jobs.exports" in loaded
    assert "sqlalchemy" not in loaded, sorted(m for m in loaded if m.startswith("squeezer"))


def test_the_sdk_imports_without_sqlalchemy_or_fastapi():
    # squeezer-client (client/pyproject.toml) installs neither: the SDK's schemas must not reach the database
    loaded = _modules_after("import squeezer.client, squeezer.cli.app")
    assert loaded.isdisjoint({"sqlalchemy", "fastapi", "celery", *HEAVY}), sorted(
        m for m in loaded if m.split(".")[0] in {"sqlalchemy", "fastapi", "celery", *HEAVY}
    )
