"""One exception class per kind of failure, so callers can catch what they can handle.

Every HTTP error carries the server's problem+json body: `status`, `title`, `detail`, and for config
errors the JSON `path` of the bad value.
"""

from __future__ import annotations

from typing import Any

from squeezer.errors import SqueezerError


class ClientError(SqueezerError):
    """Base class of the SDK's errors."""


class ServiceUnavailable(ClientError):
    """The service could not be reached (connection refused, timeout) after the allowed retries."""


class ApiError(ClientError):
    """The service answered with an error status."""

    def __init__(self, status: int, title: str, detail: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail, self.body = status, title, detail, body or {}

    @property
    def path(self) -> str | None:
        """The JSON path of the offending value, when the service named one."""
        return self.body.get("path")


class BadRequest(ApiError):
    """400: the request itself is malformed."""


class AuthenticationError(ApiError):
    """401: no key, or an unknown or revoked one."""


class NotFound(ApiError):
    """404: no such job, artifact or export for this key."""


class Conflict(ApiError):
    """409: the job's state does not allow it (cancel a finished job, delete a running one)."""


class Gone(ApiError):
    """410: the file is no longer in the store."""


class PayloadTooLarge(ApiError):
    """413: the upload is over the service's limit."""


class InvalidInput(ApiError):
    """422: an invalid config, recipe, artifact kind or request body."""


class RateLimited(ApiError):
    """429: over this key's rate limit or quota."""


class ServerError(ApiError):
    """5xx: the service failed; safe requests were already retried."""


class ChecksumMismatch(ClientError):
    """A downloaded file does not hash to the checksum the service sent; the file was not kept."""


class JobTimeout(ClientError):
    """`jobs.wait()` gave up before the job finished (the job goes on)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    422: InvalidInput,
    429: RateLimited,
}


def error_for(status: int, body: dict[str, Any]) -> ApiError:
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    return cls(status, str(body.get("title", "HTTP error")), str(body.get("detail", "")), body)
