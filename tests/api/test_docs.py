"""/docs works offline (the page and everything it loads come from this server, not a CDN), and the
OpenAPI document behind it describes the errors and the key that the API really uses."""

from __future__ import annotations

import json
import re

from fastapi.testclient import TestClient

from squeezer.api.app import openapi_document
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


def test_the_document_declares_the_key_and_every_error_as_a_problem():
    doc = openapi_document()
    operations = {op["operationId"]: op for ops in doc["paths"].values() for op in ops.values()}
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)+", name) for name in operations), list(operations)
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    public = {name for name, op in operations.items() if "security" not in op}
    assert public == {"health_live", "health_ready", "sample_configs_list", "sample_configs_get"}
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for name, op in operations.items():
        errors = {int(status): r for status, r in op["responses"].items() if int(status) >= 400}
        assert all(r["content"] == problem for r in errors.values()), name
        assert ({401, 429} <= errors.keys()) == (name not in public), name  # the key's errors, where a key is read
    assert set(doc["components"]["schemas"]["Problem"]["required"]) == {"type", "status", "title", "detail"}
    assert "HTTPValidationError" not in json.dumps(doc)  # FastAPI's 422 shape, which no route sends
