"""`create_app()`: the FastAPI application, built from settings (nothing is created at import time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from squeezer.api import errors
from squeezer.api.queue import JobQueue
from squeezer.api.routers import artifacts, events, exports, health, jobs
from squeezer.db import make_engine, make_session_factory
from squeezer.settings import Settings, get_settings
from squeezer.storage import LocalStore


def create_app(settings: Settings | None = None, queue: JobQueue | None = None) -> FastAPI:
    """The API on `settings`; new jobs go to `queue` (by default Celery on the configured broker).

    Also an ASGI factory: `uvicorn --factory squeezer.api:create_app`.
    """
    settings = settings or get_settings()
    if queue is None:
        from squeezer.worker.celery_app import CeleryQueue, create_celery

        queue = CeleryQueue(create_celery(settings))
    engine = make_engine(settings.resolved_database_url())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()  # close pooled connections on shutdown

    app = FastAPI(
        title="Squeezer",
        version="0.1.0",
        description="Accuracy-aware neural-network compression jobs",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = make_session_factory(engine)
    app.state.store = LocalStore(settings.resolved_storage_dir())
    app.state.queue = queue
    errors.install(app)
    for router in (health.router, artifacts.router, jobs.router, events.router, exports.router):
        app.include_router(router)
    return app
