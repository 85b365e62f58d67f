"""The checks a submit makes before a job is stored, shared by `POST /v1/jobs` and `POST /v1/searches`
(a search stores one job per candidate), so that neither router reaches into the other."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from squeezer.api.errors import ApiError
from squeezer.db import ApiKey, Artifact, ArtifactKind, Job
from squeezer.jobs.spec import JOB_INPUTS
from squeezer.jobs.status import ACTIVE
from squeezer.recipe import Recipe


def owned_artifact(session: Session, key: ApiKey, artifact_id: str) -> Artifact:
    artifact = session.get(Artifact, artifact_id)
    if artifact is None or artifact.owner_id != key.id:  # another key's artifact does not exist for you
        raise ApiError(404, "Not found", f"no artifact {artifact_id!r}")
    return artifact


def artifact_of_kind(session: Session, key: ApiKey, artifact_id: str, kind: ArtifactKind, field: str) -> Artifact:
    artifact = owned_artifact(session, key, artifact_id)
    if artifact.kind != kind:
        raise ApiError(
            422,
            "Wrong artifact kind",
            f"{field}: artifact {artifact_id!r} is a {artifact.kind.value}, expected a {kind.value}",
            path=f"$.{field}",
        )
    return artifact


def check_wall_time(recipe: Recipe, limit: float) -> None:
    """A recipe may shorten the service's wall-time limit for its job, not lengthen it."""
    if recipe.max_wall_time_s is not None and recipe.max_wall_time_s > limit:
        raise ApiError(
            422,
            "Invalid recipe",
            f"recipe.max_wall_time_s is {recipe.max_wall_time_s:g}; at most {limit:g} s on this service "
            "(SQUEEZER_JOB_MAX_WALL_TIME_S)",
            path="$.recipe.max_wall_time_s",
        )


def active_jobs(session: Session, key: ApiKey) -> int:
    """The key's queued and running jobs; a quota's count only while the key is locked (`db.locks`)."""
    return session.scalar(select(func.count()).where(Job.owner_id == key.id, Job.status.in_(ACTIVE))) or 0


def check_job_quota(session: Session, key: ApiKey, limit: int, candidates: int | None = None) -> None:
    """With the key locked: room for one more job, or for a search's `candidates`."""
    active = active_jobs(session, key)
    if candidates is None and active >= limit:
        raise ApiError(
            429,
            "Job quota reached",
            f"this key has {active} queued or running jobs; the limit is {limit}. "
            "Wait for one to finish, or cancel one.",
            limit=limit,
        )
    if candidates is not None and active + candidates > limit:
        raise ApiError(
            429,
            "Job quota reached",
            f"this search has {candidates} candidates and this key already has {active} queued or running "
            f"jobs; the limit is {limit}. Wait, cancel jobs, or search fewer candidates.",
            limit=limit,
        )


def check_inputs_stored(session: Session, spec: dict[str, Any]) -> None:
    """With the key locked, before a job is inserted: the artifacts it names were checked earlier in the request,
    and a DELETE may have removed one since. So no queued job names a deleted artifact."""
    for field in JOB_INPUTS:
        artifact_id = spec.get(field)
        if artifact_id is not None and session.scalar(select(Artifact.id).where(Artifact.id == artifact_id)) is None:
            raise ApiError(404, "Not found", f"no artifact {artifact_id!r} (deleted just now)", path=f"$.{field}")
