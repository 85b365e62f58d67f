"""The OpenAPI document as generated clients need it. FastAPI documents a 422 of its own shape
(`HTTPValidationError`) on every route with parameters, which no route sends; this puts the one `Problem`
schema in its place and adds the errors that come from outside the handlers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from squeezer.api.errors import Problem, problems

FASTAPI_422 = {"$ref": "#/components/schemas/HTTPValidationError"}


def describe(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with application/problem+json errors: the 422s that routes declare stay, FastAPI's go; a route
    that needs a key answers 401 and 429 (deps.get_current_key), one that takes a body 400 (FastAPI, on a body it
    cannot parse) and 413 (the body limit)."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = Problem.model_json_schema()
    for operations in doc["paths"].values():
        for operation in operations.values():
            responses = operation["responses"]
            if responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema") == FASTAPI_422:
                del responses["422"]
            if operation.get("security"):
                responses.update({str(s): r for s, r in problems(401, 429).items()})
            if "requestBody" in operation:
                responses.update({str(s): r for s, r in problems(400, 413).items()})
            operation["responses"] = dict(sorted(responses.items()))
    return doc


def install(app: FastAPI) -> None:
    """`app.openapi()` (and /openapi.json) returns the described document, built once."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
