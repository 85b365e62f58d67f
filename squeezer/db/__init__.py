"""Database layer: SQLAlchemy 2 models, engine/session factories, Alembic migrations in migrations/."""

from squeezer.db.models import ApiKey, Artifact, ArtifactKind, Base, Export, Job, JobMetric, JobStatus, Search
from squeezer.db.session import make_engine, make_session_factory

__all__ = [
    "ApiKey",
    "Artifact",
    "ArtifactKind",
    "Base",
    "Export",
    "Job",
    "JobMetric",
    "JobStatus",
    "Search",
    "make_engine",
    "make_session_factory",
]
