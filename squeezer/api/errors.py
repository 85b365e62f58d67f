"""Every error leaves the API as `application/problem+json`: status, title, detail, and where useful
the JSON path of the bad value."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from squeezer.errors import ConfigError
from squeezer.storage import UploadTooLarge

PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    """An error, as every route sends it (RFC 9457). Some carry more members: `path` (the JSON path of the
    bad value), `problems`, `errors` (each invalid field), `limit_bytes`, `limit`, `used_bytes`."""

    model_config = ConfigDict(extra="allow")

    type: str  # "about:blank": the status and title say what happened
    status: int
    title: str
    detail: str


WHEN = {
    400: "The body could not be read (bytes that are not UTF-8, a broken multipart form)",
    401: "No API key, or an unknown or revoked one",
    404: "No such resource for this key (another key's resources do not exist for it)",
    409: "The resource's state does not allow this now",
    410: "The file is no longer in the store",
    413: "The request body is over the upload limit (`limit_bytes`)",
    422: "The request is invalid; `path` or `errors` name the bad values",
    429: "Over this key's rate limit (with `Retry-After`) or one of its quotas, or too many wrong keys from this "
    "address (with `Retry-After`)",
    503: "The database or the broker does not answer",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of these error statuses: each a `Problem` in application/problem+json (a route's
    `responses=`, so that generated clients parse its errors instead of failing on them)."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {s: {"description": WHEN[s], "content": {PROBLEM_JSON: {"schema": schema}}} for s in statuses}


class ApiError(Exception):
    def __init__(
        self, status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers, self.extra = status, title, detail, headers, extra


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "status": status, "title": title, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


class ProblemForBodyLimit:
    """ASGI middleware: Starlette's body limiter answers 413 in plain text from inside its middleware,
    past the exception handlers; this rewrites that one response as problem+json."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rewriting = False

        async def send_problem(message: Message) -> None:
            nonlocal rewriting
            if message["type"] == "http.response.start" and message["status"] == 413:
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                rewriting = content_type.startswith(b"text/plain")
            if not rewriting:
                await send(message)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                response = problem(
                    413, "Upload too large", f"upload exceeds the limit of {self.limit} bytes", limit_bytes=self.limit
                )
                await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
                await send({"type": "http.response.body", "body": response.body})

        await self.app(scope, receive, send_problem)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(ConfigError)
    async def _config_error(_: Request, exc: ConfigError) -> JSONResponse:
        return problem(422, "Invalid compression config", str(exc), path=exc.path, problems=exc.problems)

    @app.exception_handler(UploadTooLarge)
    async def _too_large(_: Request, exc: UploadTooLarge) -> JSONResponse:
        return problem(413, "Upload too large", str(exc), limit_bytes=exc.limit)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"path": "$." + ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:5])
        return problem(422, "Invalid request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 413:  # the body limit, hit while the form parser read the stream
            limit = app.state.settings.max_upload_bytes
            return problem(413, "Upload too large", f"upload exceeds the limit of {limit} bytes", limit_bytes=limit)
        return problem(exc.status_code, "HTTP error", str(exc.detail))
