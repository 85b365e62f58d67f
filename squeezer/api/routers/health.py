"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text

from squeezer.api.deps import SessionDep
from squeezer.api.errors import ApiError, problems

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="health_live")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", operation_id="health_ready", responses=problems(503))
def readyz(request: Request, session: SessionDep) -> dict[str, str]:
    """Ready when both the database and the broker answer; 503 names the one that does not."""
    try:
        session.execute(text("SELECT 1"))
    except Exception as exc:
        raise ApiError(503, "Not ready", f"database unreachable: {exc}") from exc
    try:
        request.app.state.queue.ping()
    except Exception as exc:
        raise ApiError(503, "Not ready", f"broker unreachable: {exc}") from exc
    return {"status": "ok", "database": "ok", "broker": "ok"}
