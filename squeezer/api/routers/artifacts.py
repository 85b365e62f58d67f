"""Uploads: streamed to the store, hashed on the way, checked for what their kind must be."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, File, Form, UploadFile
from sqlalchemy import func, select

from squeezer.api.deps import CurrentKey, SessionDep, SettingsDep, StoreDep
from squeezer.api.errors import ApiError, problems
from squeezer.api.inspection import dataset_summary, model_signature
from squeezer.api.schemas import ArtifactRead
from squeezer.compression.config.nncf_config import NNCFConfig
from squeezer.compression.config.reader import check_top_level, parse_config
from squeezer.db import ApiKey, Artifact, ArtifactKind
from squeezer.db.locks import atomic, lock_key
from squeezer.storage import LocalStore, StoredFile

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])
CHUNK = 1 << 20
ZIP_MAGIC = b"PK\x03\x04"
# OpenAPI 3.0's mark of a file field, beside 3.1's contentMediaType: client generators read only this one
BINARY = {"format": "binary"}


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK):
        yield chunk


def _check_content(kind: str, filename: str, head: bytes, store: LocalStore, key: str) -> dict[str, Any] | None:
    """What a model, a dataset and a config must look like (nothing is unpickled); returns what was learnt."""
    if kind == "model" and not head.startswith(ZIP_MAGIC):
        raise ApiError(422, "Invalid model archive", f"{filename} is not a torch.export archive (.pt2 zip file)")
    if kind == "dataset":
        if filename.endswith(".npz") and not head.startswith(ZIP_MAGIC):
            raise ApiError(422, "Invalid dataset", f"{filename} is not a .npz (zip) file")
        if not filename.endswith((".npz", ".safetensors")):
            raise ApiError(
                422, "Invalid dataset", f"{filename}: datasets are .npz or .safetensors files with 'x' and 'y'"
            )
    if kind == "config":
        data = parse_config(store.path(key).read_bytes(), filename)  # comments allowed, as in the library
        NNCFConfig.validate(data)  # ConfigError -> 422 with the JSON path
        check_top_level(data, need_compression=False)  # a misspelt key now; a missing section at submit
        return None
    if kind == "model":
        return model_signature(store.path(key), filename)
    return dataset_summary(store.path(key), filename)


def _check_storage_quota(session: SessionDep, key: ApiKey, size: int, limit: int) -> None:
    # int(): PostgreSQL sums a BIGINT column as NUMERIC, which arrives as a Decimal that JSON cannot write
    used = int(session.scalar(select(func.sum(Artifact.size_bytes)).where(Artifact.owner_id == key.id)) or 0)
    if used + size > limit:
        raise ApiError(
            429,
            "Storage quota reached",
            f"this upload ({size} bytes) would take this key to {used + size} bytes; the limit is {limit}",
            limit_bytes=limit,
            used_bytes=used,
        )


@router.post("", status_code=201, response_model=ArtifactRead, operation_id="artifacts_create", responses=problems(422))
async def upload_artifact(
    key: CurrentKey,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(json_schema_extra=BINARY)],
    kind: Literal["model", "dataset", "config"] = Form(...),
) -> ArtifactRead:
    # the app's body limit already stopped oversized requests while they streamed in; this limit is exact
    stored = await store.save_stream(_chunks(file), settings.max_upload_bytes)
    filename = (file.filename or "upload").rsplit("/", 1)[-1][:255]
    # the database and the inspection (a pass over up to max_upload_bytes) block: off the event loop
    return await anyio.to_thread.run_sync(
        _register_upload, session, key, store, stored, kind, filename, settings.max_storage_bytes_per_key
    )


def _register_upload(
    session: SessionDep, key: ApiKey, store: LocalStore, stored: StoredFile, kind: str, filename: str, quota: int
) -> ArtifactRead:
    """The artifact row of a stored upload once its content passed the checks of its kind; read back in this
    thread, so that nothing touches the database on the event loop."""
    with store.path(stored.key).open("rb") as f:
        head = f.read(8)
    if (existing := _same_upload(session, key, stored, kind)) is not None:
        return ArtifactRead.model_validate(existing)
    try:
        meta = _check_content(kind, filename, head, store, stored.key)
        with atomic(session):  # counted and inserted with the key locked: concurrent uploads cannot both pass
            lock_key(session, key.id)
            if (existing := _same_upload(session, key, stored, kind)) is not None:  # sent twice at once
                return ArtifactRead.model_validate(existing)
            _check_storage_quota(session, key, stored.size_bytes, quota)
            artifact = Artifact(
                owner_id=key.id,
                kind=ArtifactKind(kind),
                filename=filename,
                size_bytes=stored.size_bytes,
                sha256=stored.sha256,
                storage_path=stored.key,
                meta=meta,
            )
            session.add(artifact)
    except Exception:
        # a rejected upload leaves nothing behind (unless the same bytes belong to a stored artifact)
        if session.scalars(select(Artifact).where(Artifact.sha256 == stored.sha256)).first() is None:
            store.path(stored.key).unlink(missing_ok=True)
        raise
    return ArtifactRead.model_validate(artifact)


def _same_upload(session: SessionDep, key: ApiKey, stored: StoredFile, kind: str) -> Artifact | None:
    """The key's artifact of these bytes and this kind: the same bytes again are the same artifact."""
    same = (Artifact.owner_id == key.id, Artifact.sha256 == stored.sha256, Artifact.kind == ArtifactKind(kind))
    return session.scalars(select(Artifact).where(*same)).first()


def owned_artifact(session: SessionDep, key: CurrentKey, artifact_id: str) -> Artifact:
    artifact = session.get(Artifact, artifact_id)
    if artifact is None or artifact.owner_id != key.id:  # another key's artifact does not exist for you
        raise ApiError(404, "Not found", f"no artifact {artifact_id!r}")
    return artifact


@router.get("/{artifact_id}", response_model=ArtifactRead, operation_id="artifacts_get", responses=problems(404))
def get_artifact(artifact_id: str, key: CurrentKey, session: SessionDep) -> Artifact:
    return owned_artifact(session, key, artifact_id)
