"""What a search is asked to do: the accuracy budget, the objective, the runtime, the candidates and
the compute it may spend. Shared by the API (validated at submit), the SDK and the library."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from squeezer.search.halving import GRACE_EPOCHS, HalvingRule

Objective = Literal["latency", "size", "both"]
DEADLINE_REASON = "the search's wall-time budget was spent"  # why a candidate stopped past max_wall_time_s
Runtime = Literal["onnxruntime", "openvino"]
CandidateName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.+-]+$")]


class AccuracyBudget(BaseModel):
    """How much of the FP32 metric a candidate may lose, as in NNCF's `accuracy_aware_training` params:
    exactly one of absolute points or percent of the FP32 metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    maximal_absolute_accuracy_degradation: Annotated[float, Field(ge=0)] | None = None
    maximal_relative_accuracy_degradation: Annotated[float, Field(ge=0, le=100)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> AccuracyBudget:
        given = [v for v in (self.maximal_absolute_accuracy_degradation, self.maximal_relative_accuracy_degradation)]
        if sum(v is not None for v in given) != 1:
            raise ValueError(
                "set exactly one of maximal_absolute_accuracy_degradation and maximal_relative_accuracy_degradation"
            )
        return self

    def as_params(self) -> dict[str, float]:
        """The NNCF `accuracy_aware_training.params` entry that says the same."""
        return self.model_dump(exclude_none=True)

    def floor(self, fp32_metric: float) -> float:
        """The lowest metric within the budget (metrics are higher-is-better, as the runner computes them)."""
        if self.maximal_absolute_accuracy_degradation is not None:
            return fp32_metric - self.maximal_absolute_accuracy_degradation
        assert self.maximal_relative_accuracy_degradation is not None
        return fp32_metric - abs(fp32_metric) * self.maximal_relative_accuracy_degradation / 100.0


class ComputeBudget(BaseModel):
    """What the whole search may spend. Epochs are split evenly: each candidate's accuracy-aware loop gets
    at most `max_total_epochs // candidates` epochs. Past `max_wall_time_s` no candidate starts another
    epoch; the ones that finished make the front."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_total_epochs: Annotated[int, Field(ge=1, le=100_000)] | None = None
    max_wall_time_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] | None = None

    def epochs_per_candidate(self, candidates: int, default: int) -> int:
        if self.max_total_epochs is None:
            return default
        return max(1, self.max_total_epochs // max(1, candidates))


class CandidateSpec(BaseModel):
    """A candidate of the user's own: a name and an NNCF config. Its `accuracy_aware_training` section,
    when it has none, is the search's (early exit within the search's accuracy budget)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: CandidateName
    config: dict[str, Any]


class SearchSettings(BaseModel):
    """Everything about a search but the model, the data and the training recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accuracy: AccuracyBudget
    objective: Objective = "latency"
    runtime: Runtime = "onnxruntime"
    batch_size: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=1, description="batch size the latency is measured at"
    )
    candidates: list[CandidateName | CandidateSpec] | None = Field(
        None,
        description="built-in candidate names and/or {name, config} objects; default: the built-in defaults",
        min_length=1,
        max_length=32,
    )
    budget: ComputeBudget = Field(default_factory=ComputeBudget)
    early_stopping: bool = Field(
        default=True,
        description="stop candidates below the accuracy budget that rank low at an epoch (successive halving)",
    )
    halving_rate: Annotated[int, Field(ge=2, le=8)] = Field(
        default=2, description="successive halving's reduction factor: keep the best 1/rate at each rung epoch"
    )
    halving_grace_epochs: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=GRACE_EPOCHS,
        description="epochs of training every candidate gets before successive halving can stop it "
        "(pruning and sparsity need an epoch or two to recover)",
    )

    def halving(self) -> HalvingRule:
        """The successive-halving rule these settings ask for (the service's and the library's alike)."""
        return HalvingRule(rate=self.halving_rate, grace_epochs=self.halving_grace_epochs)

    def stop_reason(
        self,
        name: str,
        epoch: int,
        margins: Mapping[str, float],
        rates: Mapping[str, float | None],
        previous: float | None,
        past_deadline: bool,
    ) -> str | None:
        """Why candidate `name` stops after recording `epoch`, or None: the search's wall-time budget is spent
        (from its first trained epoch on), or successive halving ranks it out among the candidates that have
        reported `epoch` (`margins`, `rates`; `previous`: its own margin the epoch before). The one judgement
        of a service search (`jobs/searches.py`) and a library one (`search/local.py`)."""
        if epoch > 0 and past_deadline:
            return DEADLINE_REASON
        if not self.early_stopping or name not in margins:
            return None
        return self.halving().verdict(name, epoch, margins, rates, previous)
