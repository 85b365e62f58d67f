"""The REST API (FastAPI): `create_app()` builds it; routers per resource; problem+json errors.

`create_app` is imported lazily, so the SDK can use `squeezer.api.schemas` without loading the server.
"""

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from squeezer.api.app import create_app

        return create_app
    raise AttributeError(name)
