"""How the SDK talks HTTP: one authenticated httpx client, retries with backoff, and API problems turned
into `errors.ApiError` classes. `Client` builds on it; the resource namespaces (`artifacts.py`, `jobs.py`,
`searches.py`) send through it, so the retry rule lives in one place.

Only safe requests (GET, HEAD) are retried after a failure that may have reached the server; any
request is retried when the connection itself could not be made, since nothing was sent then.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, Self

import httpx

from squeezer import __version__
from squeezer.api.schemas import ArtifactRead, JobRead, SearchRead
from squeezer.client import errors

SAFE_METHODS = ("GET", "HEAD")
RETRY_STATUSES = (429, 502, 503, 504)


def resource_id(value: str | JobRead | ArtifactRead | SearchRead) -> str:
    """The id in a request path, given an id or the resource the API returned."""
    return value if isinstance(value, str) else value.id


def _problem(response: httpx.Response) -> errors.ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {"title": response.reason_phrase, "detail": response.text[:500]}
    if not isinstance(body, dict):
        body = {"detail": str(body)}
    return errors.error_for(response.status_code, body)


class Transport:
    """An authenticated HTTP connection to the service with the retry rule above."""

    def __init__(self, url: str, api_key: str, *, timeout: float, retries: int, backoff_s: float) -> None:
        self.url = url
        self.retries, self.backoff_s = retries, backoff_s
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": f"squeezer-sdk/{__version__}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send, retrying as the module docstring says; an error status raises its `ApiError` class."""
        with self.stream(method, path, **kwargs) as response:
            response.read()
        return response

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response; failures before its status line arrives are retried (never after)."""
        method = method.upper()
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            response: httpx.Response | None = None
            try:
                response = self.http.send(self.http.build_request(method, path, **kwargs), stream=True)
            except httpx.TransportError as exc:
                if last or (method not in SAFE_METHODS and not isinstance(exc, httpx.ConnectError)):
                    raise errors.ServiceUnavailable(f"{method} {self.url}{path} failed: {exc}") from exc
            else:
                if response.status_code < 400:
                    try:
                        yield response
                    finally:
                        response.close()
                    return
                response.read()
                response.close()
                if last or method not in SAFE_METHODS or response.status_code not in RETRY_STATUSES:
                    raise _problem(response)
            time.sleep(self._delay(attempt, response))

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), 30.0)
        return self.backoff_s * 2**attempt


def wait_ready(url: str, timeout: float = 120.0, alive: Callable[[], bool] | None = None) -> None:
    """Block until `url`/readyz answers 200 (database and broker up); `alive()` False stops early."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise errors.ServiceUnavailable(f"the service at {url} stopped before it was ready")
        try:
            if httpx.get(f"{url.rstrip('/')}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise errors.ServiceUnavailable(f"the service at {url} was not ready within {timeout:.0f} s")
