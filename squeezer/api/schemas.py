"""API request/response bodies (separate from the database rows); the SDK returns these same types."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, computed_field

from squeezer.jobs.result import JobResult, RuntimeLatency
from squeezer.jobs.status import JobStatus
from squeezer.jobs.times import as_utc
from squeezer.recipe import Recipe
from squeezer.search import SearchResult, SearchSettings
from squeezer.search.result import SearchStatus

# every timestamp the API returns is timezone-aware UTC, serialized as ISO 8601 ending in `Z`
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


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
    config: dict[str, Any] | str | None = Field(
        default=None,
        description="NNCF config as JSON, or the id of a config artifact; optional for recipe mode 'ptq' "
        "(then target_device, target_runtime, preset and ignored_scopes are read from it)",
    )
    train_data: str = Field(description="dataset artifact: training data, or calibration samples for mode 'ptq'")
    val_data: str | None = Field(
        default=None, description="dataset artifact with labels; optional only for mode 'ptq' without max_drop"
    )
    recipe: Recipe = Field(default_factory=Recipe)
    priority: int = Field(0, ge=0, le=9)


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    status: JobStatus
    priority: int
    stage: str | None
    epoch: int
    total_epochs: int | None
    current_metric: float | None
    best_metric: float | None
    compression_rate: float | None
    accuracy_budget: float | None
    result: JobResult | None = Field(None, description="what a finished job reports; none until it ends")
    error: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    search_id: str | None = Field(None, description="the search this job is a candidate of")
    candidate: str | None = Field(None, description="its candidate name in that search")
    stopped_reason: str | None = Field(None, description="why its search stopped it early")

    @computed_field(description="the job has ended (succeeded, failed or cancelled): clients need no list of states")  # type: ignore[prop-decorator]
    @property
    def terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def latency(self) -> dict[str, RuntimeLatency]:
        """`result.latency`: runtime ("onnxruntime", "openvino") -> timings; empty until the job succeeded
        (and for jobs that ended before latency was measured)."""
        return self.result.latency if self.result else {}

    @property
    def warnings(self) -> list[str]:
        """`result.warnings`: what the job wants its user to know, e.g. that INT8 is not faster here."""
        return self.result.warnings if self.result else []


class JobSpec(BaseModel):
    """What a job was submitted with: its artifact ids, the NNCF config and the recipe."""

    model: str
    train_data: str
    val_data: str | None = None  # post-training jobs without accuracy control have none
    config: dict[str, Any]
    recipe: dict[str, Any]


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


class SearchCreate(SearchSettings):
    """A search: the model, data and recipe of a job, and what to search for (`SearchSettings`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    model: str = Field(description="artifact id of a torch.export archive (.pt2)")
    train_data: str
    val_data: str
    recipe: Recipe = Field(default_factory=Recipe)
    priority: int = Field(0, ge=0, le=9)


class SearchRead(BaseModel):
    id: str
    name: str
    status: SearchStatus
    settings: SearchSettings
    result: SearchResult = Field(description="the candidates as they are now, the Pareto front and the recommendation")
    created_at: UtcDatetime
    finished_at: UtcDatetime | None

    @computed_field(description="the search has ended: no candidate is queued or running")  # type: ignore[prop-decorator]
    @property
    def terminal(self) -> bool:
        return self.status not in ("queued", "running")


class SearchPage(BaseModel):
    items: list[SearchRead]
    total: int
    offset: int
    limit: int
