"""The Python SDK of the Squeezer service: `Client`, its typed responses and its error classes."""

from squeezer.api.schemas import ArtifactRead, ExportRead, JobPage, JobRead, MetricRead, RuntimeLatency
from squeezer.client.client import Client, JobEvent, wait_ready
from squeezer.client.errors import (
    ApiError,
    AuthenticationError,
    BadRequest,
    ChecksumMismatch,
    ClientError,
    Conflict,
    Gone,
    InvalidInput,
    JobTimeout,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
)

__all__ = [
    "ApiError",
    "ArtifactRead",
    "AuthenticationError",
    "BadRequest",
    "ChecksumMismatch",
    "Client",
    "ClientError",
    "Conflict",
    "ExportRead",
    "Gone",
    "InvalidInput",
    "JobEvent",
    "JobPage",
    "JobRead",
    "JobTimeout",
    "MetricRead",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "RuntimeLatency",
    "ServerError",
    "ServiceUnavailable",
    "wait_ready",
]
