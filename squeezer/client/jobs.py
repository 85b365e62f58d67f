"""`client.jobs`: submit, follow (server-sent events, reconnecting), cancel and download a job's exports."""

from __future__ import annotations

import builtins
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import EventSource

from squeezer.api.schemas import ArtifactRead, ExportRead, JobPage, JobRead, MetricRead
from squeezer.client import errors
from squeezer.client.transport import Transport
from squeezer.client.transport import resource_id as _id
from squeezer.client.validation import check_recipe
from squeezer.jobs.status import JobStatus
from squeezer.recipe import Recipe


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


class Jobs:
    def __init__(self, client: Transport) -> None:
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


def _filename(response: httpx.Response, kind: str) -> str:
    disposition = response.headers.get("content-disposition", "")
    if 'filename="' in disposition:
        name = disposition.split('filename="', 1)[1].split('"', 1)[0]
        return Path(name).name or kind
    return kind
