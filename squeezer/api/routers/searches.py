"""Searches: validated at submit (artifacts, data, every candidate's config), then run as candidate jobs.

A search's candidates are jobs like any other (`/v1/jobs/{id}`: progress, events, exports); the search
adds the request, the early stops and the Pareto front over them (`squeezer.jobs.searches`).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from squeezer.api.deps import CurrentKey, SessionDep, SettingsDep
from squeezer.api.errors import ApiError, problems
from squeezer.api.inspection import check_input_info, check_job_data
from squeezer.api.schemas import SearchCreate, SearchPage, SearchRead
from squeezer.api.submit import artifact_of_kind, check_inputs_stored, check_job_quota, check_wall_time
from squeezer.compression.config.nncf_config import NNCFConfig
from squeezer.compression.config.reader import check_top_level
from squeezer.db import ApiKey, ArtifactKind, Job, Search
from squeezer.db.locks import atomic, lock_key
from squeezer.errors import ConfigError
from squeezer.jobs import searches, transitions
from squeezer.search import SearchSettings, candidate_configs
from squeezer.search.candidates import UnknownCandidate, candidate_recipe, is_post_training, training_candidates

router = APIRouter(prefix="/v1/searches", tags=["searches"])
POLL_S = 1.0
logger = logging.getLogger(__name__)


def _read(session: Session, search: Search) -> SearchRead:
    return SearchRead(
        id=search.id,
        name=search.name,
        status=searches.status_of(search),
        settings=searches.settings_of(search),
        result=searches.search_result(session, search),
        created_at=search.created_at,
        finished_at=searches.finished_at(search),
    )


def _candidate_path(index: int, path: str) -> str:
    return f"$.candidates[{index}].config{path[1:]}"


def _configs(body: SearchCreate, model_meta: dict[str, Any] | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each candidate's NNCF config, validated as a job's would be; a 422 names the candidate's JSON path."""
    epochs = body.budget.epochs_per_candidate(training_candidates(body.candidates), body.recipe.epochs)
    try:
        configs = candidate_configs(body.candidates, None, body.accuracy, epochs, body.recipe.task, body.runtime)
    except UnknownCandidate as exc:
        raise ApiError(422, "Unknown candidate", str(exc), path=f"$.candidates[{exc.index}]") from None
    except ValueError as exc:
        raise ApiError(422, "Invalid candidates", str(exc), path="$.candidates") from None
    for index, (name, config) in enumerate(configs.items()):
        try:
            model = NNCFConfig.validate(config)
            check_top_level(config, need_compression=not is_post_training(name))
            check_input_info(model_meta, config, model.input_info)
        except ConfigError as exc:
            raise ApiError(
                422,
                "Invalid compression config",
                f"candidate {name!r}: {exc}",
                path=_candidate_path(index, exc.path),
                problems=[f"candidate {name!r}: {p}" for p in exc.problems],
            ) from None
        except ApiError as exc:
            path = exc.extra.get("path", "$")
            exc.extra["path"] = _candidate_path(index, "$" + path.removeprefix("$.config"))
            exc.detail = f"candidate {name!r}: {exc.detail}"
            raise
        yield name, config


@router.post(
    "", status_code=201, response_model=SearchRead, operation_id="searches_create", responses=problems(404, 422)
)
def create_search(
    body: SearchCreate, request: Request, key: CurrentKey, session: SessionDep, settings: SettingsDep
) -> SearchRead:
    model_artifact = artifact_of_kind(session, key, body.model, ArtifactKind.model, "model")
    check_wall_time(body.recipe, settings.job_max_wall_time_s)
    data = {}
    for field in ("train_data", "val_data"):
        artifact = artifact_of_kind(session, key, getattr(body, field), ArtifactKind.dataset, field)
        check_job_data(model_artifact.meta, artifact.meta, body.recipe.task, field)
        data[field] = artifact.id
    if body.runtime == "openvino" and importlib.util.find_spec("openvino") is None:
        raise ApiError(
            422,
            "Runtime not installed",
            "runtime 'openvino' is not installed on this service; allowed: 'onnxruntime' "
            "(or install squeezer[openvino] on the API and the workers)",
            path="$.runtime",
        )
    configs = dict(_configs(body, model_artifact.meta))
    now = datetime.now(UTC)
    deadline = now + timedelta(seconds=body.budget.max_wall_time_s) if body.budget.max_wall_time_s else None
    search_settings = SearchSettings.model_validate(body.model_dump(include=set(SearchSettings.model_fields)))
    search = Search(
        owner_id=key.id,
        name=body.name,
        spec={
            "settings": search_settings.model_dump(mode="json"),
            "model": model_artifact.id,
            "recipe": body.recipe.model_dump(),
            **data,
        },
        created_at=now,
        deadline_at=deadline,
    )
    jobs = []
    for name, config in configs.items():
        loop = config.get("accuracy_aware_training")  # none for post-training candidates: no epochs
        job = Job(
            owner_id=key.id,
            name=f"{body.name}/{name}",
            priority=body.priority,
            candidate=name,
            total_epochs=loop["params"].get("maximal_total_epochs") if loop else 0,
            spec={
                "model": model_artifact.id,
                "recipe": candidate_recipe(name, body.recipe, body.accuracy).model_dump(),
                "config": config,
                "latency_batch_size": body.batch_size,
                **data,
            },
            created_at=now,
        )
        jobs.append(job)
    with atomic(session):  # counted and inserted with the key locked: concurrent submits cannot both pass
        lock_key(session, key.id)
        check_job_quota(session, key, settings.max_active_jobs_per_key, candidates=len(jobs))
        check_inputs_stored(session, search.spec)
        session.add(search)
        session.flush()  # the search's id, for its candidates
        for job in jobs:
            job.search_id = search.id
        session.add_all(jobs)
    for job in jobs:
        try:
            request.app.state.queue.enqueue(job.id, job.priority)
            transitions.mark_enqueued(session, job.id)
        except Exception:  # stored; the sweep sends it once the broker is back
            logger.warning("could not enqueue candidate job %s; the sweep will send it", job.id, exc_info=True)
    session.refresh(search)
    return _read(session, search)


def _owned_search(session: Session, key: ApiKey, search_id: str) -> Search:
    search = session.get(Search, search_id)
    if search is None or search.owner_id != key.id:
        raise ApiError(404, "Not found", f"no search {search_id!r}")
    return search


@router.get("", response_model=SearchPage, operation_id="searches_list", responses=problems(422))
def list_searches(
    key: CurrentKey,
    session: SessionDep,
    offset: int = Query(0, ge=0, le=2**31 - 1),
    limit: int = Query(20, ge=1, le=200),
) -> SearchPage:
    query = select(Search).where(Search.owner_id == key.id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Search.created_at.desc()).offset(offset).limit(limit)).all()
    return SearchPage(items=[_read(session, r) for r in rows], total=total, offset=offset, limit=limit)


@router.get("/{search_id}", response_model=SearchRead, operation_id="searches_get", responses=problems(404))
def get_search(search_id: str, key: CurrentKey, session: SessionDep) -> SearchRead:
    return _read(session, _owned_search(session, key, search_id))


@router.post(
    "/{search_id}/cancel", response_model=SearchRead, operation_id="searches_cancel", responses=problems(404, 409)
)
def cancel_search(search_id: str, key: CurrentKey, session: SessionDep) -> SearchRead:
    """Cancels every candidate not finished; finished ones and their exports stay."""
    search = _owned_search(session, key, search_id)
    if searches.status_of(search) not in ("queued", "running"):
        raise ApiError(409, "Search already finished", f"search {search_id} is {searches.status_of(search)}")
    searches.cancel_search(session, search)
    return _read(session, _owned_search(session, key, search_id))


@router.delete("/{search_id}", status_code=204, operation_id="searches_delete", responses=problems(404, 409))
def delete_search(search_id: str, key: CurrentKey, session: SessionDep, request: Request) -> Response:
    """The search and its candidate jobs (rows and exports), queued ones cancelled first as `DELETE
    /v1/jobs/{id}` does; 409 while a candidate is running, and then nothing is changed."""
    _owned_search(session, key, search_id)
    if not transitions.settle_search_for_delete(session, search_id):
        raise ApiError(409, "Search is running", f"cancel search {search_id} first; a candidate is running")
    session.expire_all()
    search = _owned_search(session, key, search_id)
    job_ids = [job.id for job in search.candidates]
    for job in list(search.candidates):
        session.delete(job)
    session.delete(search)
    session.commit()
    for job_id in job_ids:
        request.app.state.store.delete_tree(f"jobs/{job_id}")
    return Response(status_code=204)


def _get_owned_search(search_id: str, key: CurrentKey, session: SessionDep) -> Search:
    return _owned_search(session, key, search_id)


@router.get(
    "/{search_id}/events",
    response_class=EventSourceResponse,
    operation_id="searches_events",
    responses=problems(404),
)
async def search_events(
    search_id: str,
    request: Request,
    key: CurrentKey,
    _: Annotated[Search, Depends(_get_owned_search)],  # 404 before the stream starts
) -> AsyncIterator[ServerSentEvent]:
    """`search` whenever a candidate changed (its status, epoch or metric), then `end` once the search is
    finished: the search as `GET /v1/searches/{id}` returns it. Each candidate's own epochs stream
    from its job's `/events`."""
    sessions = request.app.state.sessions

    def read() -> SearchRead | None:
        with sessions() as session:
            search = session.get(Search, search_id)
            return None if search is None or search.owner_id != key.id else _read(session, search)

    previous = None
    while True:
        current = await anyio.to_thread.run_sync(read)
        if current is None:
            yield ServerSentEvent(event="end", data={"status": "deleted"})
            return
        seen = current.model_dump(exclude={"result": {"wall_time_s"}})
        if seen != previous:
            yield ServerSentEvent(event="search", data=current)
            previous = seen
        if current.status not in ("queued", "running"):
            yield ServerSentEvent(event="end", data={"status": current.status})
            return
        await anyio.sleep(POLL_S)
