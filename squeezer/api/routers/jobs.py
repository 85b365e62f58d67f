"""Jobs: validated at submit time (artifacts, config, recipe), then owned by the database row."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import func, select

from squeezer.api.deps import CurrentKey, SessionDep, SettingsDep, StoreDep, owned_job
from squeezer.api.errors import ApiError, problems
from squeezer.api.inspection import check_input_info, check_job_data
from squeezer.api.schemas import JobCreate, JobPage, JobRead, JobSpec, MetricRead
from squeezer.api.submit import artifact_of_kind, check_inputs_stored, check_job_quota, check_wall_time
from squeezer.compression.config.nncf_config import NNCFConfig
from squeezer.compression.config.reader import check_top_level, parse_config
from squeezer.db import ArtifactKind, Job, JobMetric
from squeezer.db.locks import atomic, lock_key
from squeezer.jobs import transitions
from squeezer.jobs.status import JobStatus
from squeezer.recipe import ptq_config_problem

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
logger = logging.getLogger(__name__)


@router.post("", status_code=201, response_model=JobRead, operation_id="jobs_create", responses=problems(404, 422))
def create_job(
    body: JobCreate, request: Request, key: CurrentKey, session: SessionDep, store: StoreDep, settings: SettingsDep
) -> Job:
    recipe = body.recipe
    check_wall_time(recipe, settings.job_max_wall_time_s)
    ptq = recipe.mode == "ptq"
    _check_mode_inputs(body)
    model_artifact = artifact_of_kind(session, key, body.model, ArtifactKind.model, "model")
    spec: dict[str, Any] = {"model": model_artifact.id, "recipe": recipe.model_dump(), "val_data": None}
    for field in ("train_data", "val_data"):
        artifact_id = getattr(body, field)
        if artifact_id is None:
            continue
        data = artifact_of_kind(session, key, artifact_id, ArtifactKind.dataset, field)
        labels = not (ptq and field == "train_data")  # calibration samples need no labels
        check_job_data(model_artifact.meta, data.meta, recipe.task, field, labels)  # 422 before anything is queued
        spec[field] = data.id
    if isinstance(body.config, str):
        artifact = artifact_of_kind(session, key, body.config, ArtifactKind.config, "config")
        config = parse_config(store.path(artifact.storage_path).read_bytes(), f"config artifact {artifact.id}")
    else:
        config = body.config or {}
    model = NNCFConfig.validate(config)  # 422 naming the JSON path, before anything is stored
    check_top_level(config, need_compression=not ptq)  # a misspelt `compression` would succeed uncompressed
    check_input_info(model_artifact.meta, config, model.input_info)
    if ptq and (problem := ptq_config_problem(config)) is not None:
        raise ApiError(422, "Config does not fit the recipe", problem, path="$.config.compression")
    spec["config"] = config
    aa = model.accuracy_aware_training
    total = 0 if ptq else aa.params.maximal_total_epochs if aa is not None else recipe.epochs
    job = Job(owner_id=key.id, name=body.name, priority=body.priority, spec=spec, total_epochs=total)
    with atomic(session):  # counted and inserted with the key locked: concurrent submits cannot both pass
        lock_key(session, key.id)
        check_job_quota(session, key, settings.max_active_jobs_per_key)
        check_inputs_stored(session, spec)
        session.add(job)
    try:
        request.app.state.queue.enqueue(job.id, job.priority)
        job.enqueued_at = datetime.now(UTC)
        session.commit()
    except Exception:  # the broker is down: the job is stored, and the sweep sends it once the broker is back
        logger.warning("could not enqueue job %s; the sweep will send it", job.id, exc_info=True)
    return job


def _check_mode_inputs(body: JobCreate) -> None:
    """What each recipe mode needs: training needs a config and labelled validation data; post-training
    quantization needs validation data only for accuracy control (max_drop)."""
    if body.recipe.mode == "train":
        for field in ("config", "val_data"):
            if getattr(body, field) is None:
                raise ApiError(422, "Missing field", f"{field} is required for recipe mode 'train'", path=f"$.{field}")
    elif body.recipe.max_drop is not None and body.val_data is None:
        raise ApiError(
            422,
            "Missing field",
            "val_data is required with recipe.max_drop: accuracy control measures the metric on it",
            path="$.val_data",
        )


@router.get("", response_model=JobPage, operation_id="jobs_list", responses=problems(422))
def list_jobs(
    key: CurrentKey,
    session: SessionDep,
    status: JobStatus | None = None,
    offset: int = Query(0, ge=0, le=2**31 - 1),  # the database takes 64-bit integers; fuzzing sent 2**63
    limit: int = Query(50, ge=1, le=500),
) -> JobPage:
    query = select(Job).where(Job.owner_id == key.id)
    if status is not None:
        query = query.where(Job.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Job.created_at.desc()).offset(offset).limit(limit)).all()
    return JobPage(items=[JobRead.model_validate(r) for r in rows], total=total, offset=offset, limit=limit)


@router.get("/{job_id}", response_model=JobRead, operation_id="jobs_get", responses=problems(404))
def get_job(job_id: str, key: CurrentKey, session: SessionDep) -> Job:
    return owned_job(session, key, job_id)


@router.get("/{job_id}/spec", response_model=JobSpec, operation_id="jobs_get_spec", responses=problems(404))
def get_job_spec(job_id: str, key: CurrentKey, session: SessionDep) -> JobSpec:
    """The config and recipe the job runs with (not in the job itself, to keep job lists small)."""
    return JobSpec.model_validate(owned_job(session, key, job_id).spec)


@router.get(
    "/{job_id}/metrics", response_model=list[MetricRead], operation_id="jobs_list_metrics", responses=problems(404)
)
def job_metrics(job_id: str, key: CurrentKey, session: SessionDep) -> list[JobMetric]:
    return list(owned_job(session, key, job_id).metrics)


@router.post("/{job_id}/cancel", response_model=JobRead, operation_id="jobs_cancel", responses=problems(404, 409))
def cancel_job(job_id: str, key: CurrentKey, session: SessionDep) -> Job:
    """queued: cancelled at once; running: cancelling (the worker stops it within a second, keeping its last
    finished epoch's outputs, then records cancelled). One conditional
    transition, so a cancel racing a worker's claim or finish never overwrites what the worker did."""
    owned_job(session, key, job_id)
    cancelled = transitions.cancel(session, job_id)
    session.expire_all()
    job = owned_job(session, key, job_id)  # as the transition left it (404 if it was deleted meanwhile)
    if cancelled is None:
        raise ApiError(409, "Job already finished", f"job {job_id} is {job.status.value}")
    return job


@router.delete("/{job_id}", status_code=204, operation_id="jobs_delete", responses=problems(404, 409))
def delete_job(job_id: str, key: CurrentKey, session: SessionDep, store: StoreDep) -> Response:
    """The job, its metrics and its exports (rows and files); uploaded artifacts stay for other jobs."""
    job = owned_job(session, key, job_id)
    if not transitions.settle_for_delete(session, job_id):  # a queued job is cancelled first: no worker claims it now
        session.expire_all()
        job = owned_job(session, key, job_id)
        raise ApiError(409, "Job is running", f"cancel job {job_id} first; it is {job.status.value}")
    session.delete(job)
    session.commit()  # the rows first: a file left behind by a crash here is garbage, not a dangling row
    store.delete_tree(f"jobs/{job.id}")
    return Response(status_code=204)
