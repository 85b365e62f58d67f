"""The messages between a worker and its job process, as pydantic models.

The job process runs code that an upload could subvert, so everything it sends is validated here
and nothing it sends is trusted more than a user's input: it names which outputs exist (by kind,
never by path), and numbers that must be finite.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from squeezer.jobs.exports import EXPORTS
from squeezer.jobs.result import Finite, OptionalFinite, RuntimeLatency
from squeezer.jobs.status import JobStatus

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # a line longer than this is a broken or hostile job process


class JobRequest(BaseModel):
    """What the worker asks the job process to run (sent on its stdin, the first line)."""

    target: str = Field(description="module:function called as function(**arguments, on_epoch, should_cancel)")
    arguments: dict[str, Any]
    readable: list[str] = Field(default_factory=list, description="files and folders it may read")
    workdir: str = Field(description="the only folder it may write")
    confine: bool = True
    import_paths: list[str] = Field(default_factory=list, description="folders added to sys.path (and readable)")
    limits: dict[str, Any] | None = Field(None, description="worker/limits.py JobLimits: the kernel limits to set")


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EpochMessage(Message):
    type: Literal["epoch"] = "epoch"
    epoch: int = Field(ge=0, le=2**31 - 1)
    phase: str = Field(max_length=64)
    stage: str = Field(max_length=64)
    metric: Finite
    accuracy_budget: Finite  # required, as the metric row's columns are
    compression_rate: OptionalFinite = None
    compression_rate_target: OptionalFinite = None
    loss: OptionalFinite = None
    lr: OptionalFinite = None
    wall_time_s: Finite


class DoneMessage(Message):
    type: Literal["done"] = "done"
    # the terminal states; failed with outputs: a diverged loss kept its best epoch
    status: Literal[JobStatus.succeeded, JobStatus.cancelled, JobStatus.failed]
    error: str | None = Field(None, max_length=8192)
    uncompressed_metric: OptionalFinite = None  # a post-training job without val_data measures no metric
    metric: OptionalFinite = None
    compression_rate: OptionalFinite = None
    statistics: dict[str, Any] = Field(default_factory=dict)
    latency: dict[Literal["onnxruntime", "openvino"], RuntimeLatency] = Field(default_factory=dict)
    warnings: list[Annotated[str, Field(max_length=8192)]] = Field(default_factory=list, max_length=32)
    outputs: list[Literal[tuple(EXPORTS)]] = Field(default_factory=list)  # type: ignore[valid-type]


class FailedMessage(Message):
    type: Literal["failed"] = "failed"
    input_error: bool = Field(description="the inputs do not fit together; nothing was trained")
    reason: str = Field(max_length=8192)


ParentMessage = Annotated[EpochMessage | DoneMessage | FailedMessage, Field(discriminator="type")]
parse_message: TypeAdapter[EpochMessage | DoneMessage | FailedMessage] = TypeAdapter(ParentMessage)
