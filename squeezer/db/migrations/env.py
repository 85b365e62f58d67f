"""Alembic environment: migrations run against SQUEEZER_DATABASE_URL (or the URL set by the caller)."""

from __future__ import annotations

from alembic import context

from squeezer.db.models import Base
from squeezer.db.session import make_engine
from squeezer.settings import get_settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url()


def run() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=url.startswith("sqlite"),
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
