"""/docs works offline: the page and everything it loads come from this server, not a CDN."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.helpers import app_with_two_keys


def test_docs_load_only_local_assets(tmp_path):
    app, *_ = app_with_two_keys(tmp_path)
    client = TestClient(app)
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: *["']([^"']+)["']""", page.text)
    urls = [a or b for a, b in urls]
    assert urls, page.text
    assert all(u.startswith("/") for u in urls), urls  # no http(s):// anywhere
    assert "cdn" not in page.text.lower()
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert len(response.content) > 100, url
    assert "/openapi.json" in urls
    assert client.get("/redoc").status_code == 404  # ReDoc needs a CDN; not served
