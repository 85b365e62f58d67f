"""Database rows. The job row is the truth about a job: state, progress, metrics, exports."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from squeezer.jobs.status import JobStatus


def _now() -> datetime:
    return datetime.now(UTC)


def _uuid() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON}


class ArtifactKind(enum.StrEnum):
    model = "model"
    dataset = "dataset"
    config = "config"


class ApiKey(Base):
    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), index=True)  # shown to people; the secret is never stored
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the whole key
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Artifact(Base):
    """An uploaded file, addressed by content hash within its owner's space."""

    __tablename__ = "artifact"
    __table_args__ = (UniqueConstraint("owner_id", "sha256", "kind", name="uq_artifact_owner_content"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_uuid)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_key.id"), index=True)
    kind: Mapped[ArtifactKind] = mapped_column(Enum(ArtifactKind, name="artifact_kind"))
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_path: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # shapes read at upload (never by unpickling)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Job(Base):
    __tablename__ = "job"
    __table_args__ = (Index("ix_job_owner_status", "owner_id", "status"), Index("ix_job_queue", "status", "priority"))

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_uuid)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_key.id"))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus, name="job_status"), default=JobStatus.queued)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # artifact ids, config, recipe
    stage: Mapped[str | None] = mapped_column(String(32))
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    total_epochs: Mapped[int | None] = mapped_column(Integer)
    current_metric: Mapped[float | None] = mapped_column(Float)
    best_metric: Mapped[float | None] = mapped_column(Float)
    compression_rate: Mapped[float | None] = mapped_column(Float)
    accuracy_budget: Mapped[float | None] = mapped_column(Float)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # final statistics
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # last message sent
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # a search's candidate: its search, its name there, and why the search stopped it early (if it did)
    search_id: Mapped[str | None] = mapped_column(ForeignKey("search.id", ondelete="CASCADE"), index=True)
    candidate: Mapped[str | None] = mapped_column(String(64))
    stopped_reason: Mapped[str | None] = mapped_column(Text)

    metrics: Mapped[list[JobMetric]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="JobMetric.epoch"
    )
    exports: Mapped[list[Export]] = relationship(back_populates="job", cascade="all, delete-orphan")


class Search(Base):
    """A search: its request (`spec`: model, data, recipe, settings) and its candidates, which are jobs.
    Its state and result are read from the candidate rows, so nothing here can disagree with them."""

    __tablename__ = "search"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_uuid)
    owner_id: Mapped[str] = mapped_column(ForeignKey("api_key.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the wall-time budget's end
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    candidates: Mapped[list[Job]] = relationship(order_by="Job.created_at")


class JobMetric(Base):
    """One row per validated epoch; (job, epoch) is unique so a resumed job cannot duplicate history."""

    __tablename__ = "job_metric"
    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_job_metric_epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str] = mapped_column(String(32))
    metric: Mapped[float] = mapped_column(Float)
    accuracy_budget: Mapped[float] = mapped_column(Float)
    compression_rate: Mapped[float | None] = mapped_column(Float)
    compression_rate_target: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    wall_time_s: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)

    job: Mapped[Job] = relationship(back_populates="metrics")


class Export(Base):
    """A file a job produced; its `kind` is one of `jobs/exports.py`'s."""

    __tablename__ = "export"
    __table_args__ = (UniqueConstraint("job_id", "kind", name="uq_export_job_kind"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_uuid)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    storage_path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)

    job: Mapped[Job] = relationship(back_populates="exports")
