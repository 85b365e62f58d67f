"""Migrations go up and down on SQLite, match the models, and the schema enforces what the service relies on."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from squeezer.db import (
    ApiKey,
    Artifact,
    ArtifactKind,
    Base,
    Job,
    JobMetric,
    JobStatus,
    make_engine,
    make_session_factory,
)
from squeezer.db.migrate import downgrade, upgrade

TABLES = {"api_key", "artifact", "job", "job_metric", "export"}


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'squeezer.db'}"


def test_upgrade_downgrade_upgrade(url):
    engine = make_engine(url)
    upgrade(url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    downgrade(url)
    assert not TABLES & set(inspect(engine).get_table_names())
    upgrade(url)
    assert set(inspect(engine).get_table_names()) >= TABLES


def test_migrations_match_the_models(url):
    upgrade(url)
    with make_engine(url).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_schema_rules(url):
    upgrade(url)
    session = make_session_factory(make_engine(url))()
    key = ApiKey(name="tests", prefix="sq_abc", key_hash="0" * 64)
    session.add(key)
    session.flush()
    session.add(
        Artifact(
            owner_id=key.id,
            kind=ArtifactKind.model,
            filename="m.pt2",
            size_bytes=3,
            sha256="a" * 64,
            storage_path="ab/cd",
        )
    )
    job = Job(owner_id=key.id, name="int8", spec={"model": "x"})
    session.add(job)
    session.flush()
    assert job.status == JobStatus.queued and job.attempts == 0
    metric = {
        "phase": "initial",
        "stage": "FULLY_COMPRESSED",
        "metric": 97.0,
        "accuracy_budget": 0.5,
        "wall_time_s": 1.0,
    }
    session.add(JobMetric(job_id=job.id, epoch=1, **metric))
    session.commit()
    session.add(JobMetric(job_id=job.id, epoch=1, **metric))
    with pytest.raises(IntegrityError):  # a resumed job cannot write the same epoch twice
        session.commit()
    session.rollback()
    session.delete(job)
    session.commit()
    assert session.query(JobMetric).count() == 0  # metrics go with their job
    session.add(Job(owner_id="missing", name="orphan", spec={}))
    with pytest.raises(IntegrityError):  # foreign keys are enforced on SQLite too
        session.commit()
