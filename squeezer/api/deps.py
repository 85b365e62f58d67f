"""Dependencies as `Annotated` aliases: a database session per request, the caller's key, the caller's job,
the store (shared by the routers, so that no router imports another)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy.orm import Session

from squeezer.api.errors import ApiError
from squeezer.api.keys import find_key
from squeezer.db import ApiKey, Job
from squeezer.settings import Settings
from squeezer.storage import LocalStore


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


# reads `Authorization: Bearer <key>` and declares the scheme in the OpenAPI document, on the routes that use it;
# it never answers itself, so that a missing key is a 401 problem like an unknown one
bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="an API key (`squeezer keys create NAME`)")


def get_current_key(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiKey:
    # an address that keeps presenting wrong keys is refused before its key is looked up: guessing stays
    # slow and costs the database nothing. A right key from that address waits too: telling it apart would
    # take the very lookup this saves (and would tell a guesser which guess was right).
    address = f"auth-failures:{request.client.host if request.client else '-'}"
    limiter, failures = request.app.state.limiter, request.app.state.auth_failure_rate
    if not limiter.test(failures, address):
        limit = request.app.state.settings.auth_failure_limit
        why = f"too many failed authentications from this address (limit {limit})"
        raise _too_many(limiter, failures, address, why)
    if credentials is None:  # guesses nothing and costs no query: not counted
        raise ApiError(
            401,
            "Unauthorized",
            "send an API key as 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = find_key(session, credentials.credentials)
    if key is None:
        limiter.hit(failures, address)
        raise ApiError(
            401,
            "Unauthorized",
            "unknown or revoked API key",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    _rate_limit(request, key.id)
    return key


def _too_many(limiter: MovingWindowRateLimiter, rate: RateLimitItem, identifier: str, why: str) -> ApiError:
    """The 429 of a moving-window limit: `why`, and when the window lets `identifier` in again."""
    retry = max(1, math.ceil(limiter.get_window_stats(rate, identifier).reset_time - time.time()))
    return ApiError(429, "Too many requests", f"{why}; retry in {retry} s", headers={"Retry-After": str(retry)})


def _rate_limit(request: Request, key_id: str) -> None:
    """429 with Retry-After once a key is over `settings.rate_limit` (a moving window)."""
    limiter, rate = request.app.state.limiter, request.app.state.rate
    if not limiter.hit(rate, key_id):
        limit = request.app.state.settings.rate_limit
        raise _too_many(limiter, rate, key_id, f"this key is over its rate limit of {limit}")


CurrentKey = Annotated[ApiKey, Depends(get_current_key)]


def owned_job(session: Session, key: ApiKey, job_id: str) -> Job:
    """The caller's job, or 404 (another key's job is as unknown as a missing one)."""
    job = session.get(Job, job_id)
    if job is None or job.owner_id != key.id:
        raise ApiError(404, "Not found", f"no job {job_id!r}")
    return job


def get_owned_job(job_id: str, key: CurrentKey, session: SessionDep) -> Job:
    return owned_job(session, key, job_id)


OwnedJob = Annotated[Job, Depends(get_owned_job)]  # resolved before the handler (and before any stream) runs


# trivial dependencies are async so they run on the event loop instead of costing a threadpool hop each
async def get_store(request: Request) -> LocalStore:
    return request.app.state.store


StoreDep = Annotated[LocalStore, Depends(get_store)]


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
