"""`client.searches`: start a search over compression methods, follow it, cancel it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from httpx_sse import EventSource

from squeezer.api.schemas import ArtifactRead, SearchPage, SearchRead
from squeezer.client import errors
from squeezer.client.transport import Transport
from squeezer.client.transport import resource_id as _id
from squeezer.client.validation import check_recipe
from squeezer.recipe import Recipe
from squeezer.search import SearchSettings


class Searches:
    """Searches: each candidate is a job (`client.jobs.get(outcome.job_id)`, `client.jobs.download(...)`)."""

    def __init__(self, client: Transport) -> None:
        self._c = client

    def create(
        self,
        name: str,
        model: str | ArtifactRead,
        train_data: str | ArtifactRead,
        val_data: str | ArtifactRead,
        settings: SearchSettings,
        recipe: Recipe | dict[str, Any] | None = None,
        priority: int = 0,
    ) -> SearchRead:
        body = {
            **settings.model_dump(mode="json", exclude_none=True),
            "name": name,
            "model": _id(model),
            "train_data": _id(train_data),
            "val_data": _id(val_data),
            "recipe": check_recipe(recipe).model_dump(),
            "priority": priority,
        }
        return SearchRead.model_validate(self._c.request("POST", "/v1/searches", json=body).json())

    def get(self, search: str | SearchRead) -> SearchRead:
        return SearchRead.model_validate(self._c.request("GET", f"/v1/searches/{_id(search)}").json())

    def list(self, offset: int = 0, limit: int = 20) -> SearchPage:
        params = {"offset": offset, "limit": limit}
        return SearchPage.model_validate(self._c.request("GET", "/v1/searches", params=params).json())

    def cancel(self, search: str | SearchRead) -> SearchRead:
        return SearchRead.model_validate(self._c.request("POST", f"/v1/searches/{_id(search)}/cancel").json())

    def delete(self, search: str | SearchRead) -> None:
        self._c.request("DELETE", f"/v1/searches/{_id(search)}")

    def events(self, search: str | SearchRead, read_timeout: float = 60.0) -> Iterator[SearchRead]:
        """The search each time a candidate changed, until it ends or the connection drops."""
        timeout = httpx.Timeout(10.0, read=read_timeout)
        with self._c.stream("GET", f"/v1/searches/{_id(search)}/events", timeout=timeout) as response:
            for sse in EventSource(response).iter_sse():
                if sse.event == "search" and sse.data:
                    yield SearchRead.model_validate(sse.json())

    def wait(
        self,
        search: str | SearchRead,
        timeout: float | None = None,
        on_change: Callable[[SearchRead], None] | None = None,
    ) -> SearchRead:
        """Follow the search until every candidate finished (or it was cancelled) and return it;
        `on_change(search)` is called each time a candidate changed. Reconnects after a dropped stream."""
        search_id = _id(search)
        deadline = None if timeout is None else time.monotonic() + timeout
        current = self.get(search_id)
        while current.status in ("queued", "running"):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise errors.JobTimeout(f"search {search_id} is still {current.status} after {timeout} s")
            try:
                for current in self.events(search_id, read_timeout=min(remaining or 60.0, 60.0)):
                    if on_change is not None:
                        on_change(current)
            except (httpx.TransportError, errors.ServiceUnavailable):
                time.sleep(self._c.backoff_s)
            current = self.get(search_id)
        return current
