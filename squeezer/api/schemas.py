"""API request/response bodies (separate from the database rows); the SDK returns these same types."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from squeezer.recipe import Recipe


def _as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC), PostgreSQL aware ones in the session's zone."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# every timestamp the API returns is timezone-aware UTC, serialized as ISO 8601 ending in `Z`
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]

Status = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]


class ArtifactRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: Literal["model", "dataset", "config"]
    filename: str
    size_bytes: int
    sha256: str
    created_at: UtcDatetime


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    model: str = Field(description="artifact id of a torch.export archive (.pt2)")
    config: dict[str, Any] | str = Field(description="NNCF config as JSON, or the id of a config artifact")
    train_data: str
    val_data: str
    recipe: Recipe = Field(default_factory=Recipe)
    priority: int = Field(0, ge=0, le=9)


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: Status
    priority: int
    stage: str | None
    epoch: int
    total_epochs: int | None
    current_metric: float | None
    best_metric: float | None
    compression_rate: float | None
    accuracy_budget: float | None
    result: dict[str, Any] | None = Field(None, description="final statistics, metric and rate of a finished job")
    error: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None


class JobPage(BaseModel):
    items: list[JobRead]
    total: int
    offset: int
    limit: int


class MetricRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    epoch: int
    phase: str
    stage: str
    metric: float
    accuracy_budget: float
    compression_rate: float | None
    compression_rate_target: float | None
    loss: float | None
    lr: float | None
    wall_time_s: float


class ExportRead(BaseModel):
    kind: str
    filename: str
    size_bytes: int
    sha256: str
    url: str
