"""A job's outputs: listed with checksums, downloaded as streamed files with an ETag (the SHA-256)."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from squeezer.api.deps import CurrentKey, SessionDep, StoreDep, owned_job
from squeezer.api.errors import ApiError, problems
from squeezer.api.schemas import ExportRead
from squeezer.db import Export
from squeezer.jobs.exports import filename, media_type

router = APIRouter(prefix="/v1/jobs/{job_id}/artifacts", tags=["exports"])


def _read(job_id: str, export: Export) -> ExportRead:
    return ExportRead(
        kind=export.kind,
        filename=filename(export.kind),
        size_bytes=export.size_bytes,
        sha256=export.sha256,
        url=f"/v1/jobs/{job_id}/artifacts/{export.kind}",
    )


@router.get("", response_model=list[ExportRead], operation_id="exports_list", responses=problems(404))
def list_exports(job_id: str, key: CurrentKey, session: SessionDep) -> list[ExportRead]:
    job = owned_job(session, key, job_id)
    return [_read(job_id, e) for e in sorted(job.exports, key=lambda e: e.kind)]


@router.get(
    "/{kind}",
    response_class=FileResponse,
    operation_id="exports_download",
    responses={
        200: {"content": {"application/octet-stream": {}}},
        304: {"description": "ETag matched"},
        **problems(404, 410),
    },
)
def download_export(
    job_id: str, kind: str, request: Request, key: CurrentKey, session: SessionDep, store: StoreDep
) -> Response:
    """The file, streamed; `ETag` and `X-Checksum-SHA256` carry its SHA-256, `If-None-Match` gives 304."""
    job = owned_job(session, key, job_id)
    export = next((e for e in job.exports if e.kind == kind), None)
    if export is None:
        have = sorted(e.kind for e in job.exports)
        raise ApiError(404, "Not found", f"job {job_id} has no {kind!r} export; it has {have or 'none yet'}")
    etag = f'"{export.sha256}"'
    headers = {"ETag": etag, "X-Checksum-SHA256": export.sha256, "Cache-Control": "private, max-age=0"}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    path = store.path(export.storage_path)
    if not path.is_file():
        raise ApiError(410, "Gone", f"the {kind} file of job {job_id} is no longer in the store")
    return FileResponse(
        path,
        media_type=media_type(kind),
        filename=re.sub(r"[^A-Za-z0-9._-]", "_", f"{job.name}-{filename(kind)}"),  # a header value
        headers=headers,
    )
