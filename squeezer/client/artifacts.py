"""`client.artifacts`: uploads (models, datasets, configs), content-addressed by the service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from squeezer.api.schemas import ArtifactRead
from squeezer.client.transport import Transport
from squeezer.client.transport import resource_id as _id

ArtifactKind = Literal["model", "dataset", "config"]


class Artifacts:
    def __init__(self, client: Transport) -> None:
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
