"""Dependencies as `Annotated` aliases: a database session per request, the caller's key, the store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from squeezer.api.errors import ApiError
from squeezer.api.keys import find_key
from squeezer.db import ApiKey
from squeezer.settings import Settings
from squeezer.storage import LocalStore


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_current_key(request: Request, session: SessionDep) -> ApiKey:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise ApiError(401, "Unauthorized", "send an API key as 'Authorization: Bearer <key>'")
    key = find_key(session, secret.strip())
    if key is None:
        raise ApiError(401, "Unauthorized", "unknown or revoked API key")
    return key


CurrentKey = Annotated[ApiKey, Depends(get_current_key)]


# trivial dependencies are async so they run on the event loop instead of costing a threadpool hop each
async def get_store(request: Request) -> LocalStore:
    return request.app.state.store


StoreDep = Annotated[LocalStore, Depends(get_store)]


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
