"""What a finished job reports, typed once for the job process's message, the stored row and the API.

Free of SQLAlchemy and of the API, so that the sandboxed job process can import it. The row keeps
a plain dict (rows written by older versions may lack fields): every field has a default.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be finite")
    return value


Finite = Annotated[float, AfterValidator(_finite)]
OptionalFinite = Annotated[float | None, AfterValidator(_finite)]


class RuntimeLatency(BaseModel):
    """One runtime's median latency of the FP32 and the compressed model on the worker's CPU
    (`runtime/compare.py`)."""

    model_config = ConfigDict(extra="forbid")  # sent by the job process: nothing unexpected is kept

    fp32_ms: Annotated[Finite, Field(gt=0)]
    compressed_ms: Annotated[Finite, Field(gt=0)]
    speedup: Annotated[
        Finite, Field(gt=0, description="fp32_ms / compressed_ms; below 1 the compressed model is slower")
    ]
    paired_speedup: Annotated[Finite, Field(gt=0)] | None = Field(
        default=None,
        description="the median over back-to-back pairs of calls of FP32 time / compressed time: steadier than "
        "`speedup` on a busy CPU (what searches compare)",
    )
    batch_size: int = Field(ge=1)
    runs: int = Field(ge=1, description="timed calls of each file")


class JobResult(BaseModel):
    """A finished job's statistics, metrics, latency and warnings (also a cancelled or failed job's, when
    it kept the outputs of an epoch)."""

    statistics: dict[str, Any] = Field(default_factory=dict, description="what each compression algorithm did")
    metric: float | None = Field(None, description="the compressed model's; none without validation data")
    compression_rate: float | None = None
    uncompressed_metric: float | None = None
    latency: dict[str, RuntimeLatency] = Field(
        default_factory=dict,
        description="runtime (onnxruntime, openvino) -> the exported files timed on the worker's CPU; empty until "
        "the job succeeded",
    )
    warnings: list[str] = Field(default_factory=list, description="e.g. the compressed model is not faster")
