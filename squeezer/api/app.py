"""`create_app()`: the FastAPI application, built from settings (nothing is created at import time)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI
from limits import parse as parse_limit
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.middleware.body_limit import RequestBodyLimitMiddleware

from squeezer.api import docs, errors, openapi, ui
from squeezer.api.queue import JobQueue
from squeezer.api.routers import artifacts, events, exports, health, jobs, samples, searches
from squeezer.db import make_engine, make_session_factory
from squeezer.jobs.transitions import recover_stale_jobs
from squeezer.settings import Settings, get_settings
from squeezer.storage import LocalStore

logger = logging.getLogger(__name__)
MULTIPART_SLACK = 64 * 1024  # multipart headers and boundaries around the file


async def _sweep_stale_jobs(app: FastAPI) -> None:
    """Every `sweep_interval_s`: requeue running jobs whose worker stopped beating, and send again the
    messages of jobs queued too long (jobs/transitions.py)."""
    settings: Settings = app.state.settings
    while True:
        await anyio.sleep(settings.sweep_interval_s)
        try:
            await anyio.to_thread.run_sync(
                recover_stale_jobs,
                app.state.sessions,
                app.state.queue.enqueue,
                settings.stale_after_s,
                settings.max_attempts,
                settings.requeue_after_s,
            )
        except Exception:  # the next sweep tries again; the API keeps serving
            logger.exception("stale-job sweep failed")


def _routes(lifespan: Any = None) -> FastAPI:
    """The routes and their problem+json errors: all that the OpenAPI document is made of."""
    app = FastAPI(
        title="Squeezer",
        version="0.1.0",
        description="Accuracy-aware neural-network compression jobs",
        lifespan=lifespan,
        docs_url=None,  # served from the installed package instead of a CDN (docs.py)
        redoc_url=None,
    )
    docs.install(app)
    errors.install(app)
    routers = (jobs, events, exports, searches, samples)
    for router in (health.router, artifacts.router, *(r.router for r in routers)):
        app.include_router(router)
    openapi.install(app)
    ui.install(app)  # the dashboard at /ui: pages and their files, outside the OpenAPI document
    return app


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document, without settings, a database or a store (clients and fuzzers read it)."""
    return _routes().openapi()


def create_app(settings: Settings | None = None, queue: JobQueue | None = None) -> FastAPI:
    """The API on `settings`; new jobs go to `queue` (by default Celery on the configured broker).

    Also an ASGI factory: `uvicorn --factory squeezer.api:create_app`.
    """
    settings = settings or get_settings()
    if queue is None:
        from squeezer.jobs.queue import CeleryQueue, configured_celery

        queue = CeleryQueue(configured_celery(settings))  # sends by task name: nothing of the worker loaded
    engine = make_engine(settings.resolved_database_url())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(_sweep_stale_jobs(app))
        yield
        sweeper.cancel()
        engine.dispose()  # close pooled connections on shutdown

    app = _routes(lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = make_session_factory(engine)
    app.state.store = LocalStore(settings.resolved_storage_dir())
    app.state.queue = queue
    app.state.limiter = MovingWindowRateLimiter(storage_from_string(settings.rate_limit_storage))
    app.state.rate = parse_limit(settings.rate_limit)
    app.state.auth_failure_rate = parse_limit(settings.auth_failure_limit)
    # bodies are counted while they arrive, so an oversized upload is cut off before it is spooled anywhere
    app.add_middleware(RequestBodyLimitMiddleware, max_body_size=settings.max_upload_bytes + MULTIPART_SLACK)
    app.add_middleware(errors.ProblemForBodyLimit, limit=settings.max_upload_bytes)  # outside it: sees its 413
    return app
