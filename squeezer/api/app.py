"""`create_app()`: the FastAPI application, built from settings (nothing is created at import time)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from squeezer.api import errors
from squeezer.api.routers import artifacts, health, jobs
from squeezer.db import make_engine, make_session_factory
from squeezer.settings import Settings, get_settings
from squeezer.storage import LocalStore


def create_app(settings: Settings | None = None, enqueue: Callable[[str, int], None] | None = None) -> FastAPI:
    """`enqueue(job_id, priority)` hands a new job to the queue (the Celery wiring passes it)."""
    settings = settings or get_settings()
    app = FastAPI(title="Squeezer", version="0.1.0", description="Accuracy-aware neural-network compression jobs")
    engine = make_engine(settings.resolved_database_url())
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = make_session_factory(engine)
    app.state.store = LocalStore(settings.resolved_storage_dir())
    app.state.enqueue = enqueue
    errors.install(app)
    for router in (health.router, artifacts.router, jobs.router):
        app.include_router(router)
    return app
