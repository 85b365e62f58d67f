"""`Client`: the Python SDK of the Squeezer service (httpx underneath, the API's own pydantic types on top).

    client = Client()  # SQUEEZER_URL / SQUEEZER_API_KEY, else the local `squeezer serve` (discovery.py)
    job = client.compress(model, torch.rand(1, 1, 32, 32), "int8.json", (x_train, y_train), (x_val, y_val))
    job = client.jobs.wait(job, progress=True)
    client.jobs.download(job, "onnx", "model.onnx")

This module is the one-call workflows (export, upload, submit); HTTP and retries are `transport.py`, the
resource namespaces `artifacts.py`, `jobs.py` and `searches.py`.
"""

from __future__ import annotations

import builtins
import os
import tempfile
from pathlib import Path
from typing import Any

from squeezer.api.schemas import ArtifactRead, JobRead, SearchRead
from squeezer.client.artifacts import ArtifactKind, Artifacts
from squeezer.client.discovery import find_service
from squeezer.client.jobs import JobEvent, Jobs
from squeezer.client.packaging import dataset_bytes, export_model
from squeezer.client.searches import Searches
from squeezer.client.transport import RETRY_STATUSES, SAFE_METHODS, Transport, wait_ready
from squeezer.client.transport import resource_id as _id
from squeezer.client.validation import check_config, check_recipe
from squeezer.recipe import Recipe
from squeezer.search import AccuracyBudget, CandidateSpec, ComputeBudget, Objective, SearchSettings
from squeezer.search.spec import Runtime
from squeezer.settings import client_settings

__all__ = [  # the namespaces and helpers lived here before; their old import path keeps working
    "RETRY_STATUSES",
    "SAFE_METHODS",
    "ArtifactKind",
    "Artifacts",
    "Client",
    "JobEvent",
    "Jobs",
    "Searches",
    "wait_ready",
]


class Client(Transport):
    """The service's SDK: `artifacts`, `jobs` and `searches` namespaces, and one-call `compress`,
    `quantize` and `search` that export the model and upload the data first."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.25,
    ) -> None:
        url, api_key = find_service(url, api_key, client_settings())
        super().__init__(url, api_key, timeout=timeout, retries=retries, backoff_s=backoff_s)
        self.artifacts = Artifacts(self)
        self.jobs = Jobs(self)
        self.searches = Searches(self)

    # ------------------------------------------------------------------------------------ one call

    def compress(
        self,
        model: Any,
        example_input: Any,
        config: Any,
        train_data: Any,
        val_data: Any,
        recipe: Recipe | dict[str, Any] | None = None,
        *,
        name: str | None = None,
        priority: int = 0,
    ) -> JobRead:
        """Export `model` (torch.export, dynamic batch), upload it and the data, and submit the job.

        `example_input`: one float tensor, or int64 token ids (batch, sequence length; the length stays
        static). A model may return a tensor, a tuple, a dict or an HF `ModelOutput`: the archive returns
        its tensors in order, and the service trains on the first (the logits).
        `config`: a dict / `NNCFConfig` or a JSON file. Data: an (x, y) pair of arrays or tensors (x float
        features, or integer token ids for an int64 input), a `.npz` / `.safetensors` file, or the id of an
        uploaded dataset.
        """
        config_json, checked_recipe = check_config(config), check_recipe(recipe)  # before any upload
        model_artifact = self._upload_model(model, example_input)
        return self.jobs.create(
            name=name or type(model).__name__,
            model=model_artifact,
            config=config_json,
            train_data=self._dataset(train_data, "train.npz"),
            val_data=self._dataset(val_data, "val.npz"),
            recipe=checked_recipe,
            priority=priority,
        )

    def quantize(
        self,
        model: Any,
        example_input: Any,
        calibration_data: Any,
        val_data: Any = None,
        *,
        max_drop: float | None = None,
        subset_size: int = 300,
        model_type: str | None = None,
        config: Any = None,
        recipe: Recipe | dict[str, Any] | None = None,
        name: str | None = None,
        priority: int = 0,
    ) -> JobRead:
        """Post-training INT8 quantization as a job: no training, and no labels for calibration.

        `calibration_data`: samples (an array or tensor of x, an (x, y) pair whose y is ignored, a file or a
        dataset id). `val_data` (with labels) measures the metric; with `max_drop` (metric points) layers
        go back to FP32 until the drop is within it (accuracy control). `model_type="transformer"` for
        BERT-like models. `config`: optional NNCF config for target_device / target_runtime / ignored_scopes.
        """
        fields = {"mode": "ptq", "subset_size": subset_size, "max_drop": max_drop, "model_type": model_type}
        checked_recipe = check_recipe({**(check_recipe(recipe).model_dump() if recipe else {}), **fields})
        if max_drop is not None and val_data is None:
            raise ValueError("max_drop needs val_data: accuracy control measures the metric on it")
        config_json = check_config(config, need_compression=False) if config is not None else None
        model_artifact = self._upload_model(model, example_input)
        return self.jobs.create(
            name=name or f"{type(model).__name__} ptq",
            model=model_artifact,
            config=config_json,
            train_data=self._dataset(calibration_data, "calibration.npz"),
            val_data=self._dataset(val_data, "val.npz") if val_data is not None else None,
            recipe=checked_recipe,
            priority=priority,
        )

    def search(
        self,
        model: Any,
        example_input: Any,
        train_data: Any,
        val_data: Any,
        recipe: Recipe | dict[str, Any] | None = None,
        *,
        budget: float | AccuracyBudget | dict[str, float] = 1.0,
        objective: Objective = "latency",
        runtime: Runtime = "onnxruntime",
        batch_size: int = 1,
        candidates: builtins.list[str | CandidateSpec | dict[str, Any]] | None = None,
        max_total_epochs: int | None = None,
        max_wall_time_s: float | None = None,
        early_stopping: bool = True,
        name: str | None = None,
        priority: int = 0,
    ) -> SearchRead:
        """Upload `model` and the data (as `compress` does) and start a search over compression methods.

        `budget`: the accuracy the compressed model may lose, in absolute metric points (a float) or as
        NNCF's `{"maximal_relative_accuracy_degradation": 1.0}`. `objective`: what the recommended model
        is best at ("latency", "size" or "both"), measured on `runtime` at `batch_size`. `candidates`:
        built-in names (`squeezer.search.BUILTIN_CANDIDATES`) and/or `{"name", "config"}` NNCF configs;
        default: `squeezer.search.DEFAULT_CANDIDATES`. Follow it with `client.searches.wait(search)`.
        """
        accuracy = (
            AccuracyBudget(maximal_absolute_accuracy_degradation=budget)
            if isinstance(budget, (int, float))
            else AccuracyBudget.model_validate(budget)
        )
        settings = SearchSettings(  # checked here, before any upload
            accuracy=accuracy,
            objective=objective,
            runtime=runtime,
            batch_size=batch_size,
            candidates=[
                c if isinstance(c, (str, CandidateSpec)) else CandidateSpec.model_validate(c) for c in candidates
            ]
            if candidates is not None
            else None,
            budget=ComputeBudget(max_total_epochs=max_total_epochs, max_wall_time_s=max_wall_time_s),
            early_stopping=early_stopping,
        )
        checked_recipe = check_recipe(recipe)
        model_artifact = self._upload_model(model, example_input)
        return self.searches.create(
            name=name or f"{type(model).__name__} search",
            model=model_artifact,
            train_data=self._dataset(train_data, "train.npz"),
            val_data=self._dataset(val_data, "val.npz"),
            settings=settings,
            recipe=checked_recipe,
            priority=priority,
        )

    def _dataset(self, data: Any, filename: str) -> str:
        if isinstance(data, tuple) or hasattr(data, "shape"):  # (x, y), or x alone (calibration samples)
            return self.artifacts.upload(dataset_bytes(data), "dataset", filename=filename).id
        if isinstance(data, (str, os.PathLike)) and Path(data).is_file():
            return self.artifacts.upload(Path(data), "dataset").id
        if isinstance(data, os.PathLike) or (isinstance(data, str) and data.endswith((".npz", ".safetensors"))):
            raise FileNotFoundError(f"no dataset file {str(data)!r}")
        if isinstance(data, (str, ArtifactRead)):
            return _id(data)
        raise TypeError(f"data must be an (x, y) pair, a .npz/.safetensors file or an artifact id, not {data!r}")

    def _upload_model(self, model: Any, example_input: Any) -> ArtifactRead:
        """`model` exported with torch.export (`packaging.py`) and uploaded as a model artifact."""
        with tempfile.TemporaryDirectory(prefix="squeezer-") as tmp:
            archive = export_model(model, example_input, Path(tmp) / "model.pt2")
            return self.artifacts.upload(archive, "model")
