"""The dashboard's pages. Adding one: a `Page` in `PAGES`, `templates/<template>` extending `base.html`,
and `static/<script>` that calls `Squeezer.page(async (ctx) => ...)`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from squeezer.search import BUILTIN_CANDIDATES, DEFAULT_CANDIDATES

HERE = Path(__file__).resolve().parent
PREFIX = "/ui"
STATIC = f"{PREFIX}/static"
# scripts from this origin only, no inline script: a key in sessionStorage is only as safe as the page.
# uPlot sizes its elements through style attributes, hence 'unsafe-inline' for styles alone.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Page:
    path: str  # under /ui; {parameters} reach the script as data-* attributes of <main>
    template: str
    title: str
    script: str
    nav: str | None = None  # the label in the navigation bar; None for pages reached by a link


PAGES: tuple[Page, ...] = (
    Page("/jobs", "jobs.html", "Jobs", "jobs.js", nav="Jobs"),
    Page("/jobs/{job_id}", "job.html", "Job", "job.js"),
    Page("/searches", "searches.html", "Searches", "searches.js", nav="Searches"),
    Page("/searches/{search_id}", "search.html", "Search", "search.js"),
    Page("/submit", "submit.html", "Submit a job", "submit.js", nav="Submit"),
)


def install(app: FastAPI) -> None:
    """The pages and `/ui/static` on `app` (kept out of the OpenAPI document: they are not the API)."""
    templates = Jinja2Templates(directory=HERE / "templates")
    # static choices the submit page offers for a search (no user data: the shells stay public)
    templates.env.globals["builtin_candidates"] = BUILTIN_CANDIDATES
    templates.env.globals["default_candidates"] = DEFAULT_CANDIDATES
    app.mount(STATIC, StaticFiles(directory=HERE / "static"), name="ui-static")
    nav = [(p.nav, PREFIX + p.path) for p in PAGES if p.nav]

    def route(page: Page) -> None:
        async def render(request: Request) -> HTMLResponse:
            response = templates.TemplateResponse(
                request,
                page.template,
                {"page": page, "nav": nav, "static": STATIC, "params": request.path_params},
            )
            response.headers["Content-Security-Policy"] = CSP
            response.headers["Referrer-Policy"] = "no-referrer"
            response.headers["Cache-Control"] = "no-store"
            return response

        app.add_api_route(PREFIX + page.path, render, methods=["GET"], include_in_schema=False, name=page.template)

    for page in PAGES:
        route(page)

    @app.get(PREFIX, include_in_schema=False)
    @app.get(PREFIX + "/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse(PREFIX + PAGES[0].path)
