"""Migrations go up and down on SQLite and on a real PostgreSQL, match the models there, and the schema
enforces what the service relies on."""

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


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'squeezer.db'}"
        return
    url = request.getfixturevalue("postgres_server").create_database("schema")
    yield url
    downgrade(url)  # the next test starts from an empty database


def _enum_types(engine):
    if engine.dialect.name != "postgresql":
        return set()
    with engine.connect() as connection:
        return set(connection.exec_driver_sql("SELECT typname FROM pg_type WHERE typtype = 'e'").scalars())


@pytest.fixture
def engine(url):
    engine = make_engine(url)
    yield engine
    engine.dispose()


def test_upgrade_downgrade_upgrade(url, engine):
    upgrade(url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    downgrade(url)
    assert not TABLES & set(inspect(engine).get_table_names())
    assert _enum_types(engine) == set()  # PostgreSQL enum types go too, or the next upgrade fails
    upgrade(url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    if engine.dialect.name == "postgresql":
        assert _enum_types(engine) == {"job_status", "artifact_kind"}


def test_migrations_match_the_models(url, engine):
    upgrade(url)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_schema_rules(url, engine):
    upgrade(url)
    with make_session_factory(engine)() as session:
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
