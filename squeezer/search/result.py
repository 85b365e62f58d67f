"""What a search returns: every candidate's outcome, the Pareto front and the recommended model.
The same type from the service (assembled from the candidate jobs' rows) and from the library."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from squeezer.compression.registry import SPARSITY_ALGORITHMS
from squeezer.jobs.status import JobStatus
from squeezer.search.spec import Objective

SearchStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
CandidateStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled", "stopped"]


def compression_algorithms(config: Mapping[str, Any]) -> list[str]:
    """The `algorithm` of each section of an NNCF config's `compression` (one section or a list)."""
    sections = config.get("compression") or []
    if isinstance(sections, Mapping):
        sections = [sections]
    return [str(s["algorithm"]) for s in sections if isinstance(s, Mapping) and "algorithm" in s]


class CandidateOutcome(BaseModel):
    name: str
    status: CandidateStatus = Field(
        description="`stopped`: ended early by the search (halving or its wall-time budget)"
    )
    job_id: str | None = Field(
        default=None, description="the candidate's job (service searches); its exports download as a job's"
    )
    metric: float | None = Field(default=None, description="the compressed model's validation metric at the end")
    within_budget: bool | None = None
    latency_ms: float | None = Field(
        default=None,
        description="its exported model's latency on the search's runtime, on the search's common scale: the "
        "median FP32 latency over the candidates divided by this candidate's speedup (see `measured_latency_ms`)",
    )
    fp32_latency_ms: float | None = Field(
        default=None, description="the FP32 latency on that scale (the same for every measured candidate)"
    )
    measured_latency_ms: float | None = Field(
        default=None, description="median latency as timed on its worker, alternating with the FP32 model"
    )
    measured_fp32_latency_ms: float | None = Field(default=None, description="the FP32 model's, timed alongside it")
    measured_speedup: float | None = Field(
        default=None, description="median over back-to-back pairs of calls of FP32 time / its time (the worker's)"
    )
    measured_speedup_spread: float | None = Field(
        default=None,
        ge=0,
        description="the spread of those pairs' ratios relative to their median, where the worker reports it; "
        "the search counts latencies closer than this (and never closer than 5%) as ties",
    )
    size_bytes: int | None = Field(default=None, description="size of its exported ONNX file")
    compression_rate: float | None = None
    algorithms: list[str] = Field(
        default_factory=list, description="the NNCF compression algorithms of its config, in order"
    )
    epochs: int = 0
    wall_time_s: float | None = None
    on_front: bool = False
    stopped_reason: str | None = None
    error: str | None = None

    @computed_field(description="it has ended (stopped by the search, or its job ended); clients need no list")  # type: ignore[prop-decorator]
    @property
    def terminal(self) -> bool:
        return self.status == "stopped" or JobStatus(self.status).is_terminal

    @property
    def speedup(self) -> float | None:
        if self.latency_ms is None or self.fp32_latency_ms is None:
            return None
        return self.fp32_latency_ms / self.latency_ms

    @property
    def sparse(self) -> bool:
        """Whether its compression zeroes weights (sparsity), which only pays where a runtime skips zeros."""
        return any(a in SPARSITY_ALGORITHMS for a in self.algorithms)


class SearchResult(BaseModel):
    objective: Objective
    runtime: str
    batch_size: int
    fp32_metric: float | None = Field(default=None, description="the original model's metric on the validation data")
    metric_floor: float | None = Field(default=None, description="the lowest metric within the accuracy budget")
    candidates: list[CandidateOutcome]
    front: list[str] = Field(description="names of the candidates on the Pareto front, best objective first")
    recommended: str | None = Field(default=None, description="the best candidate within the budget for the objective")
    keep_fp32: bool = Field(
        default=False,
        description="no candidate within the budget is measurably faster than FP32 on the runtime, so for the "
        "latency objective the recommendation is to keep the original model (`recommended` is None)",
    )
    recommendation_note: str | None = Field(
        default=None, description="why, in words, when no candidate within the budget is faster than FP32"
    )
    epochs_spent: int = 0
    wall_time_s: float | None = None

    def candidate(self, name: str) -> CandidateOutcome:
        for outcome in self.candidates:
            if outcome.name == name:
                return outcome
        raise KeyError(name)

    @property
    def best(self) -> CandidateOutcome | None:
        return self.candidate(self.recommended) if self.recommended else None
