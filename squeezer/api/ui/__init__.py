"""The web dashboard at `/ui`, served by the API process: server-rendered page shells (Jinja2) whose
scripts read everything through the public `/v1` API with the key the user typed in.

The HTML holds no data, so the pages need no session on the server: the key stays in the browser's
`sessionStorage` and goes out only as the API's `Authorization` header, never in a URL or a cookie.
A page is one `Page` entry in `pages.py`, a template in `templates/` and a script in `static/`.
"""

from squeezer.api.ui.pages import PAGES, Page, install

__all__ = ["PAGES", "Page", "install"]
