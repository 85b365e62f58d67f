"""Uploads: streamed to the store, hashed on the way, checked for what their kind must be; deleted when no live
job uses them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, File, Form, Response, UploadFile
from sqlalchemy import func, select

from squeezer.api.deps import CurrentKey, SessionDep, SettingsDep, StoreDep
from squeezer.api.errors import ApiError, problems
from squeezer.api.inspection import dataset_summary, model_signature
from squeezer.api.schemas import ArtifactRead
from squeezer.api.submit import owned_artifact
from squeezer.compression.config.nncf_config import NNCFConfig
from squeezer.compression.config.reader import check_top_level, parse_config
from squeezer.db import ApiKey, Artifact, ArtifactKind, Job
from squeezer.db.locks import atomic, lock_content, lock_key
from squeezer.jobs.spec import JOB_INPUTS
from squeezer.jobs.status import TERMINAL
from squeezer.settings import Settings
from squeezer.storage import LocalStore, StagedFile

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])
CHUNK = 1 << 20
ZIP_MAGIC = b"PK\x03\x04"
# OpenAPI 3.0's mark of a file field, beside 3.1's contentMediaType: client generators read only this one
BINARY = {"format": "binary"}


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK):
        yield chunk


def _check_content(kind: str, filename: str, path: Path, settings: Settings) -> dict[str, Any] | None:
    """What a model, a dataset and a config must look like (nothing is unpickled, nothing unpacked past the
    settings' limits); returns what was learnt."""
    with path.open("rb") as f:
        head = f.read(8)
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
        data = parse_config(path.read_bytes(), filename)  # comments allowed, as in the library
        NNCFConfig.validate(data)  # ConfigError -> 422 with the JSON path
        check_top_level(data, need_compression=False)  # a misspelt key now; a missing section at submit
        return None
    if kind == "model":
        return model_signature(path, filename, settings.max_archive_member_bytes)
    return dataset_summary(path, filename, settings.max_archive_member_bytes, settings.max_dataset_bytes)


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
    staged = await store.stage_stream(_chunks(file), settings.max_upload_bytes)
    filename = (file.filename or "upload").rsplit("/", 1)[-1][:255]
    try:  # the database and the inspection (a pass over up to max_upload_bytes) block: off the event loop
        return await anyio.to_thread.run_sync(_register_upload, session, key, store, staged, kind, filename, settings)
    finally:
        store.discard(staged)  # published by then, or refused


def _register_upload(
    session: SessionDep,
    key: ApiKey,
    store: LocalStore,
    staged: StagedFile,
    kind: str,
    filename: str,
    settings: Settings,
) -> ArtifactRead:
    """The artifact row of an upload once its content passed the checks of its kind; read back in this
    thread, so that nothing touches the database on the event loop."""
    if (existing := _same_upload(session, key, staged, kind)) is not None:
        return ArtifactRead.model_validate(existing)
    meta = _check_content(kind, filename, staged.path, settings)  # the staged copy: a refused upload leaves nothing
    with atomic(session):  # counted and inserted with the key locked: concurrent uploads cannot both pass
        lock_key(session, key.id)
        lock_content(session, staged.sha256)  # a DELETE removes the file of these bytes under this lock
        if (existing := _same_upload(session, key, staged, kind)) is not None:  # sent twice at once
            return ArtifactRead.model_validate(existing)
        _check_storage_quota(session, key, staged.size_bytes, settings.max_storage_bytes_per_key)
        stored = store.publish(staged)  # (back) in place before the row that names it is committed
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
    return ArtifactRead.model_validate(artifact)


def _same_upload(session: SessionDep, key: ApiKey, staged: StagedFile, kind: str) -> Artifact | None:
    """The key's artifact of these bytes and this kind: the same bytes again are the same artifact."""
    same = (Artifact.owner_id == key.id, Artifact.sha256 == staged.sha256, Artifact.kind == ArtifactKind(kind))
    return session.scalars(select(Artifact).where(*same)).first()


@router.get("/{artifact_id}", response_model=ArtifactRead, operation_id="artifacts_get", responses=problems(404))
def get_artifact(artifact_id: str, key: CurrentKey, session: SessionDep) -> Artifact:
    return owned_artifact(session, key, artifact_id)


@router.delete("/{artifact_id}", status_code=204, operation_id="artifacts_delete", responses=problems(404, 409))
def delete_artifact(artifact_id: str, key: CurrentKey, session: SessionDep, store: StoreDep) -> Response:
    """The artifact, so that its bytes no longer count against the key's storage quota; 409 while a queued or
    running job uses it. Finished jobs that used it keep their results and exports, and their spec still names
    it. Its file goes once no artifact row, of any key, has the same bytes."""
    with atomic(session):  # with the key locked: no job that uses it is submitted meanwhile (jobs.create_job)
        lock_key(session, key.id)
        artifact = owned_artifact(session, key, artifact_id)
        if (job := _live_job_using(session, key, artifact_id)) is not None:
            raise ApiError(
                409,
                "Artifact in use",
                f"job {job.id} ({job.status.value}) uses artifact {artifact_id}; cancel it or wait for it to finish",
            )
        sha256, storage_path = artifact.sha256, artifact.storage_path
        session.delete(artifact)
    with atomic(session):  # then its file, unless another row has these bytes; an upload of them waits
        lock_content(session, sha256)
        if session.scalar(select(Artifact.id).where(Artifact.sha256 == sha256).limit(1)) is None:
            store.delete(storage_path)
    return Response(status_code=204)


def _live_job_using(session: SessionDep, key: ApiKey, artifact_id: str) -> Job | None:
    live = select(Job).where(Job.owner_id == key.id, Job.status.not_in(TERMINAL)).order_by(Job.created_at)
    return next((job for job in session.scalars(live) if artifact_id in (job.spec.get(f) for f in JOB_INPUTS)), None)
