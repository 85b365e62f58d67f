"""`Client`: the Python SDK of the Squeezer service (httpx underneath, the API's own pydantic types on top).

    client = Client()  # SQUEEZER_URL / SQUEEZER_API_KEY, else the local `squeezer serve` (discovery.py)
    job = client.compress(model, torch.rand(1, 1, 32, 32), "int8.json", (x_train, y_train), (x_val, y_val))
    job = client.jobs.wait(job, progress=True)
    client.jobs.download(job, "onnx", "model.onnx")

Only safe requests (GET, HEAD) are retried after a failure that may have reached the server; any
request is retried when the connection itself could not be made, since nothing was sent then.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from httpx_sse import EventSource

from squeezer import __version__
from squeezer.api.schemas import (
    ArtifactRead,
    ExportRead,
    JobPage,
    JobRead,
    MetricRead,
    SearchPage,
    SearchRead,
)
from squeezer.client import errors
from squeezer.client.discovery import find_service
from squeezer.client.packaging import dataset_bytes, export_model
from squeezer.client.validation import check_config, check_recipe
from squeezer.jobs.status import JobStatus
from squeezer.recipe import Recipe
from squeezer.search import AccuracyBudget, CandidateSpec, ComputeBudget, Objective, SearchSettings
from squeezer.search.spec import Runtime
from squeezer.settings import client_settings

SAFE_METHODS = ("GET", "HEAD")
RETRY_STATUSES = (429, 502, 503, 504)
ArtifactKind = Literal["model", "dataset", "config"]


def _id(value: str | JobRead | ArtifactRead | SearchRead) -> str:
    return value if isinstance(value, str) else value.id


def _problem(response: httpx.Response) -> errors.ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {"title": response.reason_phrase, "detail": response.text[:500]}
    if not isinstance(body, dict):
        body = {"detail": str(body)}
    return errors.error_for(response.status_code, body)


@dataclass(frozen=True)
class JobEvent:
    """One server-sent event: `job` (data is the job), `metric` (one epoch) or `end`."""

    event: str
    id: str | None
    data: dict[str, Any]

    @property
    def job(self) -> JobRead:
        return JobRead.model_validate(self.data)

    @property
    def metric(self) -> MetricRead:
        return MetricRead.model_validate(self.data)


class Client:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.25,
    ) -> None:
        self.url, api_key = find_service(url, api_key, client_settings())
        self.retries, self.backoff_s = retries, backoff_s
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": f"squeezer-sdk/{__version__}"},
            timeout=timeout,
        )
        self.artifacts = Artifacts(self)
        self.jobs = Jobs(self)
        self.searches = Searches(self)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ transport

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send, retrying as the module docstring says; an error status raises its `ApiError` class."""
        with self.stream(method, path, **kwargs) as response:
            response.read()
        return response

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response; failures before its status line arrives are retried (never after)."""
        method = method.upper()
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            response: httpx.Response | None = None
            try:
                response = self.http.send(self.http.build_request(method, path, **kwargs), stream=True)
            except httpx.TransportError as exc:
                if last or (method not in SAFE_METHODS and not isinstance(exc, httpx.ConnectError)):
                    raise errors.ServiceUnavailable(f"{method} {self.url}{path} failed: {exc}") from exc
            else:
                if response.status_code < 400:
                    try:
                        yield response
                    finally:
                        response.close()
                    return
                response.read()
                response.close()
                if last or method not in SAFE_METHODS or response.status_code not in RETRY_STATUSES:
                    raise _problem(response)
            time.sleep(self._delay(attempt, response))

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), 30.0)
        return self.backoff_s * 2**attempt

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
        with tempfile.TemporaryDirectory(prefix="squeezer-") as tmp:
            archive = export_model(model, example_input, Path(tmp) / "model.pt2")
            model_artifact = self.artifacts.upload(archive, "model")
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
        with tempfile.TemporaryDirectory(prefix="squeezer-") as tmp:
            archive = export_model(model, example_input, Path(tmp) / "model.pt2")
            model_artifact = self.artifacts.upload(archive, "model")
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
        with tempfile.TemporaryDirectory(prefix="squeezer-") as tmp:
            archive = export_model(model, example_input, Path(tmp) / "model.pt2")
            model_artifact = self.artifacts.upload(archive, "model")
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


class Artifacts:
    def __init__(self, client: Client) -> None:
        self._c = client

    def upload(
        self, source: str | os.PathLike[str] | bytes, kind: ArtifactKind, filename: str | None = None
    ) -> ArtifactRead:
        """Upload a file (streamed from disk) or bytes; the same bytes give back the same artifact."""
        files: dict[str, tuple[str, Any]]
        if isinstance(source, bytes):
            files = {"file": (filename or f"upload.{kind}", source)}
            response = self._c.request("POST", "/v1/artifacts", data={"kind": kind}, files=files)
        else:
            path = Path(source)
            with path.open("rb") as f:
                files = {"file": (filename or path.name, f)}
                response = self._c.request("POST", "/v1/artifacts", data={"kind": kind}, files=files)
        return ArtifactRead.model_validate(response.json())

    def get(self, artifact: str | ArtifactRead) -> ArtifactRead:
        return ArtifactRead.model_validate(self._c.request("GET", f"/v1/artifacts/{_id(artifact)}").json())

    def delete(self, artifact: str | ArtifactRead) -> None:
        """Free its bytes from the key's storage quota; `Conflict` while a queued or running job uses it."""
        self._c.request("DELETE", f"/v1/artifacts/{_id(artifact)}")


class Jobs:
    def __init__(self, client: Client) -> None:
        self._c = client

    def create(
        self,
        name: str,
        model: str | ArtifactRead,
        config: dict[str, Any] | str | ArtifactRead | None,
        train_data: str | ArtifactRead,
        val_data: str | ArtifactRead | None,
        recipe: Recipe | dict[str, Any] | None = None,
        priority: int = 0,
    ) -> JobRead:
        """Submit a job from uploaded artifacts; `config` is inline JSON or a config artifact (None and
        `val_data=None` only for recipe mode "ptq")."""
        body = {
            "name": name,
            "model": _id(model),
            "config": config if isinstance(config, dict) or config is None else _id(config),
            "train_data": _id(train_data),
            "val_data": _id(val_data) if val_data is not None else None,
            "recipe": check_recipe(recipe).model_dump(),
            "priority": priority,
        }
        return JobRead.model_validate(self._c.request("POST", "/v1/jobs", json=body).json())

    def get(self, job: str | JobRead) -> JobRead:
        return JobRead.model_validate(self._c.request("GET", f"/v1/jobs/{_id(job)}").json())

    def list(self, status: JobStatus | str | None = None, offset: int = 0, limit: int = 50) -> JobPage:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if status:
            params["status"] = status
        return JobPage.model_validate(self._c.request("GET", "/v1/jobs", params=params).json())

    def metrics(self, job: str | JobRead) -> builtins.list[MetricRead]:
        return [MetricRead.model_validate(m) for m in self._c.request("GET", f"/v1/jobs/{_id(job)}/metrics").json()]

    def cancel(self, job: str | JobRead) -> JobRead:
        return JobRead.model_validate(self._c.request("POST", f"/v1/jobs/{_id(job)}/cancel").json())

    def delete(self, job: str | JobRead) -> None:
        self._c.request("DELETE", f"/v1/jobs/{_id(job)}")

    def exports(self, job: str | JobRead) -> builtins.list[ExportRead]:
        return [ExportRead.model_validate(e) for e in self._c.request("GET", f"/v1/jobs/{_id(job)}/artifacts").json()]

    def events(
        self, job: str | JobRead, last_event_id: str | None = None, read_timeout: float = 60.0
    ) -> Iterator[JobEvent]:
        """The job's server-sent events until it ends (`end`), or until the connection drops."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        timeout = httpx.Timeout(10.0, read=read_timeout)
        with self._c.stream("GET", f"/v1/jobs/{_id(job)}/events", headers=headers, timeout=timeout) as response:
            for sse in EventSource(response).iter_sse():
                if sse.data:  # keep-alive comments arrive as events without data
                    yield JobEvent(sse.event, sse.id or None, sse.json())

    def wait(self, job: str | JobRead, progress: bool = False, timeout: float | None = None) -> JobRead:
        """Follow the job until it succeeded, failed or was cancelled, and return it.

        Reconnects after a dropped stream, resuming after the last epoch seen; the database row is read
        again each time, so nothing is missed. `progress=True` draws a progress bar on the terminal.
        """
        from squeezer.client.progress import JobProgress

        job_id = _id(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        current = self.get(job_id)
        last_id: str | None = None
        with JobProgress(current, enabled=progress) as bar:
            while not current.terminal:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise errors.JobTimeout(f"job {job_id} is still {current.status} after {timeout} s")
                try:
                    for event in self.events(job_id, last_id, read_timeout=min(remaining or 60.0, 60.0)):
                        if event.event == "metric":
                            last_id = event.id
                            bar.metric(event.metric)
                        elif event.event == "job":
                            current = event.job
                            bar.job(current)
                        elif event.event == "end":
                            break
                except (httpx.TransportError, errors.ServiceUnavailable):
                    time.sleep(self._c.backoff_s)
                current = self.get(job_id)
                bar.job(current)
        return current

    def download(self, job: str | JobRead, kind: str = "onnx", path: str | os.PathLike[str] | None = None) -> Path:
        """Stream one export to `path` (a file, or a folder for the service's file name), checking its SHA-256."""
        job_id = _id(job)
        target = Path(path) if path is not None else Path.cwd()
        with self._c.stream("GET", f"/v1/jobs/{job_id}/artifacts/{kind}") as stream:
            expected = stream.headers.get("x-checksum-sha256", "")
            if target.is_dir():
                target = target / _filename(stream, kind)
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in stream.iter_bytes(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                if expected and digest.hexdigest() != expected:
                    raise errors.ChecksumMismatch(
                        f"{kind} of job {job_id}: got {digest.hexdigest()}, expected {expected}"
                    )
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return target


class Searches:
    """Searches: each candidate is a job (`client.jobs.get(outcome.job_id)`, `client.jobs.download(...)`)."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def create(
        self,
        name: str,
        model: str | ArtifactRead,
        train_data: str | ArtifactRead,
        val_data: str | ArtifactRead,
        settings: SearchSettings,
        recipe: Recipe | dict[str, Any] | None = None,
        priority: int = 0,
    ) -> SearchRead:
        body = {
            **settings.model_dump(mode="json", exclude_none=True),
            "name": name,
            "model": _id(model),
            "train_data": _id(train_data),
            "val_data": _id(val_data),
            "recipe": check_recipe(recipe).model_dump(),
            "priority": priority,
        }
        return SearchRead.model_validate(self._c.request("POST", "/v1/searches", json=body).json())

    def get(self, search: str | SearchRead) -> SearchRead:
        return SearchRead.model_validate(self._c.request("GET", f"/v1/searches/{_id(search)}").json())

    def list(self, offset: int = 0, limit: int = 20) -> SearchPage:
        params = {"offset": offset, "limit": limit}
        return SearchPage.model_validate(self._c.request("GET", "/v1/searches", params=params).json())

    def cancel(self, search: str | SearchRead) -> SearchRead:
        return SearchRead.model_validate(self._c.request("POST", f"/v1/searches/{_id(search)}/cancel").json())

    def delete(self, search: str | SearchRead) -> None:
        self._c.request("DELETE", f"/v1/searches/{_id(search)}")

    def events(self, search: str | SearchRead, read_timeout: float = 60.0) -> Iterator[SearchRead]:
        """The search each time a candidate changed, until it ends or the connection drops."""
        timeout = httpx.Timeout(10.0, read=read_timeout)
        with self._c.stream("GET", f"/v1/searches/{_id(search)}/events", timeout=timeout) as response:
            for sse in EventSource(response).iter_sse():
                if sse.event == "search" and sse.data:
                    yield SearchRead.model_validate(sse.json())

    def wait(
        self,
        search: str | SearchRead,
        timeout: float | None = None,
        on_change: Callable[[SearchRead], None] | None = None,
    ) -> SearchRead:
        """Follow the search until every candidate finished (or it was cancelled) and return it;
        `on_change(search)` is called each time a candidate changed. Reconnects after a dropped stream."""
        search_id = _id(search)
        deadline = None if timeout is None else time.monotonic() + timeout
        current = self.get(search_id)
        while current.status in ("queued", "running"):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise errors.JobTimeout(f"search {search_id} is still {current.status} after {timeout} s")
            try:
                for current in self.events(search_id, read_timeout=min(remaining or 60.0, 60.0)):
                    if on_change is not None:
                        on_change(current)
            except (httpx.TransportError, errors.ServiceUnavailable):
                time.sleep(self._c.backoff_s)
            current = self.get(search_id)
        return current


def wait_ready(url: str, timeout: float = 120.0, alive: Callable[[], bool] | None = None) -> None:
    """Block until `url`/readyz answers 200 (database and broker up); `alive()` False stops early."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise errors.ServiceUnavailable(f"the service at {url} stopped before it was ready")
        try:
            if httpx.get(f"{url.rstrip('/')}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise errors.ServiceUnavailable(f"the service at {url} was not ready within {timeout:.0f} s")


def _filename(response: httpx.Response, kind: str) -> str:
    disposition = response.headers.get("content-disposition", "")
    if 'filename="' in disposition:
        name = disposition.split('filename="', 1)[1].split('"', 1)[0]
        return Path(name).name or kind
    return kind
