"""The REST API (FastAPI): `create_app()` builds it; routers per resource; problem+json errors."""

from squeezer.api.app import create_app

__all__ = ["create_app"]
