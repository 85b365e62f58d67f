"""Interactive API docs served from the installed `swagger-ui-py` package's Swagger UI 5 files, so `/docs`
works on a machine without internet (FastAPI's default pages load Swagger UI and ReDoc from a CDN).
Swagger UI 5, because FastAPI writes OpenAPI 3.1, which Swagger UI 4 (`swagger-ui-bundle`, used before)
could not render at all.

The page shares its origin with the dashboard, which keeps a key in `sessionStorage`: it runs under a
policy that allows this server's scripts and the one inline script that starts Swagger UI (by its
hash), so nothing injected into it could run and read that key. Swagger UI styles elements inline,
hence 'unsafe-inline' for styles alone. No OAuth2 redirect page: the API's only scheme is a bearer key.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def swagger_ui_files() -> str:
    """The folder of Swagger UI's built files inside `swagger-ui-py`, found without importing it (its
    package imports every web framework adapter it has)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: pip install squeezer's dependencies")
    return os.path.join(spec.submodule_search_locations[0], "static")


def policy(html: str) -> str:
    """The Content-Security-Policy for `html`: its inline scripts allowed by hash, nothing else inline."""
    inline = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline)
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def install(app: FastAPI) -> None:
    """`/docs` (Swagger UI) and its assets from the package; call on an app built with `docs_url=None`."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_files()), name="swagger-ui")
    page = bytes(
        get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            # no badge fetched from validator.swagger.io: the page loads nothing from elsewhere
            swagger_ui_parameters={"validatorUrl": None},
        ).body
    ).decode()
    headers = {"Content-Security-Policy": policy(page), "Referrer-Policy": "no-referrer"}

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)
